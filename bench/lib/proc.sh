# Shared by bench scripts (source bench/lib/proc.sh): a process's CPU
# seconds so far, and a wait for it to go quiet.

# cpu PID: user and system CPU seconds PID has used.
cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$1/stat"; }

# idle PID TIMEOUT: wait until process PID uses less than 20 ms of CPU in
# each of two seconds in a row (a daemon that synced just now builds its
# search index in the background; Dovecot's was made by doveadm index),
# at most TIMEOUT seconds; says how long it waited.
idle() {
	local t0 c0 c1 calm=0
	t0=$(date +%s)
	c0=$(cpu "$1")
	while [ $(($(date +%s) - t0)) -lt "$2" ]; do
		sleep 1
		c1=$(cpu "$1")
		if python3 -c "import sys; sys.exit(0 if $c1 - $c0 < 0.02 else 1)"; then calm=$((calm + 1)); else calm=0; fi
		c0=$c1
		[ "$calm" -ge 2 ] && break
	done
	echo "daemon idle after $(($(date +%s) - t0)) s" >&2
}
