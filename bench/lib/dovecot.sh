# Private Dovecot instance for side-by-side benchmarks (source this file).
#
#   dovecot_start DIR IMAP_PORT LMTP_PORT USER PASSWORD
#   dovecot_stop DIR
#
# Dovecot (Debian's dovecot-imapd and dovecot-lmtpd) runs on 127.0.0.1 with
# its own config, Maildir storage under DIR/mail and the default mail_fsync
# (optimized: every delivered message is fsync'd, the durability cspool
# matches). It never touches a packaged instance.

dovecot_start() {
	local dir=$1 imap=$2 lmtp=$3 user=$4 pass=$5
	command -v dovecot >/dev/null || {
		echo "dovecot missing: apt-get install -y dovecot-imapd dovecot-lmtpd" >&2
		return 1
	}
	id vmail >/dev/null 2>&1 || useradd -r -M -s /usr/sbin/nologin vmail
	mkdir -p "$dir/run" "$dir/state" "$dir/mail"
	chown vmail:vmail "$dir/mail"
	printf '%s:{PLAIN}%s::::::\n' "$user" "$pass" >"$dir/passwd"
	cat >"$dir/dovecot.conf" <<CONF
instance_name = cspool-bench-$$
protocols = imap lmtp
listen = 127.0.0.1
base_dir = $dir/run
state_dir = $dir/state
log_path = $dir/dovecot.log
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
first_valid_uid = 1
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%n $dir/passwd
}
userdb {
  driver = passwd-file
  args = username_format=%n $dir/passwd
  default_fields = uid=vmail gid=vmail home=$dir/mail/%n
}
mail_location = maildir:$dir/mail/%n/Maildir
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $imap
  }
  inet_listener imaps {
    port = 0
  }
}
service lmtp {
  inet_listener lmtp {
    address = 127.0.0.1
    port = $lmtp
  }
}
protocol lmtp {
  postmaster_address = postmaster@example.invalid
}
protocol imap {
  mail_max_userip_connections = 200
}
CONF
	dovecot -c "$dir/dovecot.conf" || return 1
	local i
	for i in $(seq 1 50); do
		(exec 3<>"/dev/tcp/127.0.0.1/$imap") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$lmtp") 2>/dev/null && return 0
		sleep 0.1
	done
	echo "dovecot did not start; see $dir/dovecot.log" >&2
	return 1
}

dovecot_stop() {
	local dir=$1 pid
	pid=$(cat "$dir/run/master.pid" 2>/dev/null) || return 0
	kill "$pid" 2>/dev/null || true
	local i
	for i in $(seq 1 50); do
		kill -0 "$pid" 2>/dev/null || return 0
		sleep 0.1
	done
}
