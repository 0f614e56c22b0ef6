# free_ports PORT...: stops the benchmark before it starts anything if a
# process already listens on one of the loopback ports it is about to use.
# Without it the run's waits connect to that process and fail late (an
# IMAP login refused), or measure it. Sourced by the bench/ scripts.
free_ports() {
	local p
	for p in "$@"; do
		if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "port $p on 127.0.0.1 is in use by another process; choose other ports with PORTS=..." >&2
			exit 1
		fi
	done
}
