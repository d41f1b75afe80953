#!/usr/bin/env bash
# shellcheck shell=bash
#
# scripts/lib/stack.sh — the local PostgreSQL + NATS JetStream stack shared by
# scripts/up and scripts/test (the two commands of README.md).
#
# Source it, then call:
#
#   ordo_stack_up        Decide, per server, between the configured ("shared") one and a
#                        private one; start or reuse the private ones; export
#                        DATABASE_URL and NATS_URL; print one line saying what is used.
#   ordo_stack_release   Stop the private servers this shell owns (the ones it started,
#                        or adopted from a run that died). Meant for `trap ... EXIT`.
#   ordo_stack_down      Stop every private server recorded in the state directory,
#                        whoever owns it. Never touches anything it did not start.
#   ordo_stack_purge     ordo_stack_down, then delete the private data directories.
#   ordo_stack_status    Print what is recorded and whether it still runs.
#   ordo_stack_restart pg|nats [HOW]
#                        Stop a private server this shell owns and start it again on the
#                        same port and data (clients keep their URL and reconnect). HOW:
#                        for pg `fast` (default) or `immediate` (no shutdown checkpoint:
#                        crash recovery on start); for nats `term` (default) or `kill`.
#                        Used by scripts/chaos.
#
# Or run it: scripts/lib/stack.sh start|stop|purge|status|env   (`start` leaves the
# servers running, unowned, until `stop`; `env` prints export lines for eval).
#
# Reads:
#   ORDO_STACK         auto (default): use DATABASE_URL / NATS_URL when reachable, else
#                      start private ones; private: always private; shared: never start
#                      anything, fail when a configured server is unreachable.
#   DATABASE_URL       default postgres://127.0.0.1:5432/ordo; "reachable" = pg_isready
#                      (a TCP connect when pg_isready is not installed).
#   NATS_URL           default nats://127.0.0.1:4222; "reachable" = a server whose INFO
#                      line says "jetstream":true.
#   ORDO_STATE_DIR     default <repo>/.ordo; holds stack.env, the record of what was
#                      started (pids, ports, URLs, data directories), and the data.
#   ORDO_PG_BINDIR     directory with initdb and pg_ctl (default: the highest
#                      /usr/lib/postgresql/<ver>/bin, else from PATH).
#   ORDO_PG_USER       who runs PostgreSQL when we are root (default: postgres).
#   ORDO_NATS_SERVER   the nats-server binary (default: from PATH or /usr/sbin).
#   ORDO_NATS_CONFIG   a nats-server configuration (`ordo nats-config` writes one: a user
#                      per role of ordo) a private NATS is started with (`-c`); stack.env
#                      records it, and a restart uses it again. Unset: no authentication,
#                      as scripts/test needs (its tests make streams of their own names).
# Exports: DATABASE_URL, NATS_URL, ORDO_STACK_PG and ORDO_STACK_NATS (shared|private), and
# ORDO_STACK_NATS_CONF (the configuration the private NATS runs with; empty: none).
#
# Private servers listen on 127.0.0.1 only, on free ports in 20000-31999 (below Linux's
# ephemeral range, so a port we pick is not some client's source port). PostgreSQL trusts
# loopback connections, its superuser is `postgres` (URL postgres://postgres@127.0.0.1:<port>/ordo;
# ordo creates the database), fsync stays on. PostgreSQL refuses to run as root, so as
# root it runs as Debian's `postgres` user (runuser) on a data directory that user owns;
# when that user cannot reach <state>/pg (say the repo is under /root) the data lives in
# /var/tmp/ordo-<hash of the state dir>/ instead, and stack.env says so.
#
# Ownership: each private server records its owner (pid and start time of the shell
# that started it). A run that finds a recorded server alive reuses it; it adopts it
# (and so stops it on exit) when the owner is gone, and leaves it alone when the owner
# still runs (say `scripts/test` while `scripts/up` is up). Servers that were left
# behind by a dead run and are not wanted now are stopped. Every kill first checks the
# pid's start time and command line against the record.
#
# Needs bash >= 4.3 and Linux (/proc, util-linux flock/runuser/setsid).

_ORDO_STACK_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_ORDO_REPO_DIR=$(cd "$_ORDO_STACK_LIB_DIR/../.." && pwd)

# Keys of stack.env, in the order they are written.
_ORDO_STACK_KEYS=(
	PG_PID PG_START PG_PORT PG_USER PG_BINDIR PG_BASE PG_DATA PG_RUN_DIR PG_LOG PG_OWNER DATABASE_URL
	NATS_PID NATS_START NATS_PORT NATS_MONITOR_PORT NATS_BIN NATS_STORE NATS_LOG NATS_PIDFILE NATS_CONF NATS_OWNER NATS_URL
)
declare -gA _ordo_rec=()
_ordo_state=
_ordo_lock_fd=
_ordo_port=
_ordo_up_state= # the state directory ordo_stack_up used; ordo_stack_release goes back there

_ordo_say() { printf 'ordo stack: %s\n' "$*" >&2; }
_ordo_err() { printf 'ordo stack: error: %s\n' "$*" >&2; }

_ordo_is_root() { [[ $(id -u) -eq 0 ]]; }

_ordo_state_dir() { printf '%s\n' "${ORDO_STATE_DIR:-$_ORDO_REPO_DIR/.ordo}"; }

# ---------------------------------------------------------------- processes

# Start time (clock ticks since boot, field 22 of /proc/PID/stat) of a live, non-zombie pid.
_ordo_proc_start() {
	local stat
	local -a fields
	[[ $1 =~ ^[0-9]+$ ]] || return 1
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*") "}
	read -r -a fields <<<"$stat"
	# fields[0] is the state (field 3): Z zombie, X dead.
	[[ ${fields[0]:-Z} != Z && ${fields[0]:-X} != X ]] || return 1
	printf '%s\n' "${fields[19]}"
}

_ordo_pid_alive() { _ordo_proc_start "$1" >/dev/null; }

_ordo_cmdline() { tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null; }

# _ordo_pid_is PID START NEEDLE: PID is the process we recorded: same start time and its
# command line contains NEEDLE (the data or store directory).
_ordo_pid_is() {
	local start cmd
	start=$(_ordo_proc_start "$1") || return 1
	[[ $start == "$2" ]] || return 1
	cmd=$(_ordo_cmdline "$1") || return 1
	[[ $cmd == *"$3"* ]]
}

_ordo_self_id() {
	local start
	start=$(_ordo_proc_start "$$") || start=0
	printf '%s:%s\n' "$$" "$start"
}

# Owner field: "none" (started by `stack.sh start`, stopped only by `stop`) or PID:START.
_ordo_owner_alive() {
	local owner=$1 start
	[[ $owner == none ]] && return 0
	[[ $owner == *:* ]] || return 1
	start=$(_ordo_proc_start "${owner%%:*}") || return 1
	[[ $start == "${owner#*:}" ]]
}

# Wait until PID is gone (or a zombie): _ordo_wait_gone PID SECONDS
_ordo_wait_gone() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		_ordo_pid_alive "$1" || return 0
		sleep 0.1
	done
	! _ordo_pid_alive "$1"
}

# ---------------------------------------------------------------- network

# _ordo_url_hostport URL DEFAULT_PORT -> "host port" of the first host in URL
_ordo_url_hostport() {
	local rest authority host port
	rest=${1#*://}
	rest=${rest%%,*}
	authority=${rest%%[/?#]*}
	authority=${authority##*@}
	if [[ $authority == \[* ]]; then
		host=${authority%%]*}
		host=${host#[}
		port=${authority#*]}
	else
		host=${authority%%:*}
		port=${authority#"$host"}
	fi
	port=${port#:}
	printf '%s %s\n' "${host:-127.0.0.1}" "${port:-$2}"
}

_ordo_tcp_open() {
	# shellcheck disable=SC2016 # $1/$2 are the inner bash's arguments
	timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# The INFO line a NATS server sends first.
_ordo_nats_info() {
	# shellcheck disable=SC2016 # $1/$2 are the inner bash's arguments
	timeout 3 bash -c 'exec 3<>"/dev/tcp/$1/$2" && IFS= read -r line <&3 && printf "%s\n" "$line"' \
		_ "$1" "$2" 2>/dev/null
}

_ordo_nats_jetstream() {
	local info
	info=$(_ordo_nats_info "$1" "$2") || return 1
	[[ $info == INFO* && $info == *'"jetstream":true'* ]]
}

_ordo_nats_url_ok() {
	local host port
	read -r host port < <(_ordo_url_hostport "$1" 4222)
	_ordo_nats_jetstream "$host" "$port"
}

_ordo_pg_url_ok() {
	local host port
	if command -v pg_isready >/dev/null 2>&1; then
		pg_isready -q -t 3 -d "$1" >/dev/null 2>&1
		return
	fi
	read -r host port < <(_ordo_url_hostport "$1" 5432)
	_ordo_tcp_open "$host" "$port"
}

# Sets _ordo_port to a port nobody listens on, distinct from the ones in $1 (a list).
_ordo_free_port() {
	local taken=" ${1:-} " port i
	for ((i = 0; i < 200; i++)); do
		port=$((20000 + RANDOM % 12000))
		[[ $taken == *" $port "* ]] && continue
		if ! _ordo_tcp_open 127.0.0.1 "$port"; then
			_ordo_port=$port
			return 0
		fi
	done
	_ordo_err "found no free TCP port on 127.0.0.1 in 20000-31999"
	return 1
}

# ---------------------------------------------------------------- state file and lock

_ordo_lock() {
	mkdir -p "$_ordo_state" || {
		_ordo_err "cannot create the state directory $_ordo_state"
		return 1
	}
	exec {_ordo_lock_fd}>>"$_ordo_state/stack.lock" || return 1
	if ! flock -n "$_ordo_lock_fd"; then
		_ordo_say "waiting for another ordo stack operation ($_ordo_state/stack.lock)"
		flock -w 600 "$_ordo_lock_fd" || {
			_ordo_err "timed out waiting for $_ordo_state/stack.lock"
			_ordo_unlock
			return 1
		}
	fi
}

_ordo_unlock() {
	if [[ -n $_ordo_lock_fd ]]; then
		exec {_ordo_lock_fd}>&-
		_ordo_lock_fd=
	fi
}

_ordo_env_load() {
	local file="$_ordo_state/stack.env" line key
	_ordo_rec=()
	[[ -f $file ]] || return 0
	while IFS= read -r line || [[ -n $line ]]; do
		[[ $line == \#* || $line != *=* ]] && continue
		key=${line%%=*}
		[[ " ${_ORDO_STACK_KEYS[*]} " == *" $key "* ]] || continue
		_ordo_rec[$key]=${line#*=}
	done <"$file"
}

_ordo_env_save() {
	local file="$_ordo_state/stack.env" key any=0
	for key in "${_ORDO_STACK_KEYS[@]}"; do
		[[ -n ${_ordo_rec[$key]:-} ]] && any=1
	done
	if ((any == 0)); then
		rm -f "$file"
		return 0
	fi
	{
		printf '# ordo local stack: private servers started by scripts/lib/stack.sh (KEY=value, not shell-quoted)\n'
		for key in "${_ORDO_STACK_KEYS[@]}"; do
			if [[ -n ${_ordo_rec[$key]:-} ]]; then
				printf '%s=%s\n' "$key" "${_ordo_rec[$key]}"
			fi
		done
	} >"$file.tmp.$$" && mv -f "$file.tmp.$$" "$file"
}

_ordo_forget() { # pg|nats
	local key prefix
	prefix=$([[ $1 == pg ]] && echo PG_ || echo NATS_)
	for key in "${_ORDO_STACK_KEYS[@]}"; do
		[[ $key == "$prefix"* ]] && unset '_ordo_rec[$key]'
	done
	if [[ $1 == pg ]]; then unset '_ordo_rec[DATABASE_URL]'; else unset '_ordo_rec[NATS_URL]'; fi
	return 0
}

# ---------------------------------------------------------------- packages

_ordo_find_pg_bindir() {
	local d best='' data_ver=${1:-}
	if [[ -n ${ORDO_PG_BINDIR:-} ]]; then
		if [[ -x $ORDO_PG_BINDIR/initdb && -x $ORDO_PG_BINDIR/pg_ctl ]]; then
			printf '%s\n' "$ORDO_PG_BINDIR"
			return 0
		fi
		_ordo_err "ORDO_PG_BINDIR=$ORDO_PG_BINDIR has no initdb/pg_ctl"
		return 1
	fi
	# An existing data directory wants the major version that created it.
	if [[ -n $data_ver && -x /usr/lib/postgresql/$data_ver/bin/pg_ctl ]]; then
		printf '%s\n' "/usr/lib/postgresql/$data_ver/bin"
		return 0
	fi
	for d in /usr/lib/postgresql/*/bin; do
		if [[ -x $d/initdb && -x $d/pg_ctl ]]; then
			if [[ -z $best ]] || [[ $(printf '%s\n%s\n' "$best" "$d" | sort -V | tail -n 1) == "$d" ]]; then
				best=$d
			fi
		fi
	done
	if [[ -z $best ]] && command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
		best=$(dirname "$(command -v pg_ctl)")
	fi
	[[ -n $best ]] || return 1
	printf '%s\n' "$best"
}

_ordo_find_nats() {
	local c
	if [[ -n ${ORDO_NATS_SERVER:-} ]]; then
		[[ -x $ORDO_NATS_SERVER ]] && printf '%s\n' "$ORDO_NATS_SERVER" && return 0
		_ordo_err "ORDO_NATS_SERVER=$ORDO_NATS_SERVER is not executable"
		return 1
	fi
	c=$(command -v nats-server 2>/dev/null) && printf '%s\n' "$c" && return 0
	for c in /usr/sbin/nats-server /usr/bin/nats-server /usr/local/bin/nats-server; do
		[[ -x $c ]] && printf '%s\n' "$c" && return 0
	done
	return 1
}

# _ordo_install PACKAGE... — Debian packages, only as root; otherwise say what to run.
_ordo_install() {
	local log="$_ordo_state/apt.log"
	if ! _ordo_is_root; then
		if command -v apt-get >/dev/null 2>&1; then
			_ordo_err "private servers need the Debian packages $*, which are not installed; run:  sudo apt-get install -y $*   (or set DATABASE_URL / NATS_URL to servers that are running)"
		else
			_ordo_err "private servers need $* (PostgreSQL's initdb and pg_ctl, nats-server), which are not installed; install them, or set ORDO_PG_BINDIR / ORDO_NATS_SERVER, or set DATABASE_URL / NATS_URL to servers that are running"
		fi
		return 1
	fi
	if ! command -v apt-get >/dev/null 2>&1; then
		_ordo_err "private servers need $*, which are not installed, and there is no apt-get here; install them, or set DATABASE_URL / NATS_URL to servers that are running"
		return 1
	fi
	_ordo_say "installing Debian packages: $* (log: $log)"
	if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$log" 2>&1; then
		_ordo_say "apt-get install failed; running apt-get update and trying again"
		if ! { apt-get update >>"$log" 2>&1 &&
			DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@" >>"$log" 2>&1; }; then
			tail -n 20 "$log" >&2
			_ordo_err "could not install $*; see $log"
			return 1
		fi
	fi
}

# ---------------------------------------------------------------- PostgreSQL

_ordo_pg_user() {
	if _ordo_is_root; then printf '%s\n' "${ORDO_PG_USER:-postgres}"; else id -un; fi
}

# Run a command as the user that owns the PostgreSQL data directory, from a directory it
# can enter, without our lock fd (a server inheriting it would hold the lock forever).
_ordo_as() { # USER CMD...
	local user=$1
	shift
	(
		if [[ -n $_ordo_lock_fd ]]; then exec {_ordo_lock_fd}>&-; fi
		cd / || exit 1
		if _ordo_is_root && [[ $user != root ]]; then
			exec runuser -u "$user" -- "$@"
		fi
		exec "$@"
	)
}

# Where PostgreSQL's files live: the state directory, or (root, and the postgres user
# cannot enter it) /var/tmp/ordo-<hash of the state directory>.
_ordo_pg_base() {
	local user=$1 hash dir
	if ! _ordo_is_root || runuser -u "$user" -- test -x "$_ordo_state" -a -r "$_ordo_state" 2>/dev/null; then
		printf '%s\n' "$_ordo_state"
		return 0
	fi
	hash=$(printf '%s' "$_ordo_state" | sha256sum | cut -c1-16)
	dir=/var/tmp/ordo-$hash
	if [[ -L $dir || (-e $dir && ! -d $dir) || (-d $dir && ! -O $dir) ]]; then
		_ordo_err "$dir exists but is not a directory owned by $(id -un); remove it"
		return 1
	fi
	if [[ ! -d $dir ]]; then mkdir -m 0755 "$dir" || return 1; fi
	printf '%s\n' "$dir"
}

# POSIX-shell quoting (pg_ctl passes -o through /bin/sh).
_ordo_shq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# Is the recorded PostgreSQL still ours and answering?
_ordo_pg_recorded_alive() {
	[[ -n ${_ordo_rec[PG_PID]:-} ]] || return 1
	_ordo_pid_is "${_ordo_rec[PG_PID]}" "${_ordo_rec[PG_START]:-}" "${_ordo_rec[PG_DATA]:-/nonexistent}" || return 1
	_ordo_pg_url_ok "postgres://postgres@127.0.0.1:${_ordo_rec[PG_PORT]:-0}/postgres"
}

# A postmaster already running on our data directory although stack.env lost track of
# it (say stack.env was deleted): adopt it from postmaster.pid.
_ordo_pg_adopt_running() { # DATA
	local data=$1 pid port start
	local -a lines
	[[ -r $data/postmaster.pid ]] || return 1
	mapfile -t lines <"$data/postmaster.pid" || return 1
	pid=${lines[0]:-}
	port=${lines[3]:-}
	start=$(_ordo_proc_start "$pid") || return 1
	_ordo_pid_is "$pid" "$start" "$data" || return 1
	[[ $port =~ ^[0-9]+$ ]] && _ordo_pg_url_ok "postgres://postgres@127.0.0.1:$port/postgres" || return 1
	_ordo_rec[PG_PID]=$pid
	_ordo_rec[PG_START]=$start
	_ordo_rec[PG_PORT]=$port
	return 0
}

# Start a private PostgreSQL (initdb on first use). Fills the PG_* records.
_ordo_pg_start() {
	local user bindir base data run log sockopt opts port=${1:-} attempt size ver='' new_log
	user=$(_ordo_pg_user)
	if _ordo_is_root && ! id -u "$user" >/dev/null 2>&1; then
		_ordo_err "PostgreSQL refuses to run as root and there is no '$user' user to run it as; install Debian's postgresql package (it creates one) or set ORDO_PG_USER to an unprivileged user"
		return 1
	fi
	base=$(_ordo_pg_base "$user") || return 1
	data=$base/pg
	run=$base/pg-run
	log=$run/postgres.log
	[[ -r $data/PG_VERSION ]] && ver=$(<"$data/PG_VERSION")
	bindir=$(_ordo_find_pg_bindir "$ver") || {
		_ordo_err "no PostgreSQL server binaries (initdb, pg_ctl) found"
		return 1
	}
	if [[ -n $ver && ! -x /usr/lib/postgresql/$ver/bin/pg_ctl && -z ${ORDO_PG_BINDIR:-} && $bindir == /usr/lib/postgresql/* ]]; then
		_ordo_err "$data was created by PostgreSQL $ver, which is not installed; remove it (scripts/lib/stack.sh purge) or install postgresql-$ver"
		return 1
	fi
	mkdir -p "$data" "$run" || return 1
	if _ordo_is_root && [[ $user != root ]]; then
		chown "$user:" "$data" "$run" || return 1
	fi
	chmod 0700 "$data" "$run" || return 1

	_ordo_rec[PG_USER]=$user
	_ordo_rec[PG_BINDIR]=$bindir
	_ordo_rec[PG_BASE]=$base
	_ordo_rec[PG_DATA]=$data
	_ordo_rec[PG_RUN_DIR]=$run
	_ordo_rec[PG_LOG]=$log

	if _ordo_pg_adopt_running "$data"; then
		_ordo_pg_how=reused
		return 0
	fi

	if [[ ! -s $data/PG_VERSION ]]; then
		local locale=(--no-locale) locales
		locales=$(locale -a 2>/dev/null) || locales=
		if grep -qixE 'c\.utf-?8' <<<"$locales"; then locale=(--locale=C.UTF-8); fi
		_ordo_say "initialising a PostgreSQL data directory in $data"
		if ! _ordo_as "$user" "$bindir/initdb" -D "$data" -U postgres --auth=trust -E UTF8 "${locale[@]}" \
			</dev/null >>"$run/initdb.log" 2>&1; then
			tail -n 20 "$run/initdb.log" >&2
			_ordo_err "initdb failed; see $run/initdb.log"
			return 1
		fi
	fi

	# A postmaster killed with -9 leaves postmaster.pid behind, and PostgreSQL refuses to
	# start while that pid exists, a zombie included. Its pid is gone (or a zombie): the
	# file is stale. (PostgreSQL itself still refuses while orphaned backends hold the
	# old shared memory; that case is retried below.)
	_ordo_pg_clear_stale_pidfile "$data" "$run"

	# Unix socket in a directory we own, unless its path is too long for a socket
	# address (108 bytes); then TCP only.
	if ((${#run} + 20 < 108)); then
		sockopt="-k $(_ordo_shq "$run")"
	else
		sockopt="-c unix_socket_directories=''"
	fi
	for ((attempt = 1; attempt <= 5; attempt++)); do
		# Prefer the port of the previous run (stable URL); re-check right before use.
		if [[ -z $port || $attempt -gt 1 ]] || _ordo_tcp_open 127.0.0.1 "$port"; then
			_ordo_free_port "${_ordo_rec[NATS_PORT]:-} ${_ordo_rec[NATS_MONITOR_PORT]:-}" || return 1
			port=$_ordo_port
		fi
		_ordo_tcp_open 127.0.0.1 "$port" && continue
		opts="-c listen_addresses=127.0.0.1 -p $port $sockopt -c max_connections=200 -c fsync=on"
		size=$(stat -c %s "$log" 2>/dev/null || echo 0)
		if _ordo_as "$user" "$bindir/pg_ctl" start -D "$data" -l "$log" -w -t 60 -o "$opts" \
			</dev/null >>"$run/pg_ctl.log" 2>&1; then
			if _ordo_pg_adopt_running "$data"; then
				_ordo_pg_how=started
				return 0
			fi
			_ordo_err "PostgreSQL started but does not answer on 127.0.0.1:$port; see $log"
			_ordo_pg_stop_data "$user" "$bindir" "$data"
			return 1
		fi
		new_log=$(tail -c +"$((size + 1))" "$log" 2>/dev/null) || new_log=
		if [[ $new_log == *"could not bind"* || $new_log == *"already in use"* ]]; then
			_ordo_say "port $port was taken meanwhile; trying another"
			continue
		fi
		if [[ $new_log == *"shared memory block is still in use"* || $new_log == *"lock file"*"already exists"* ]]; then
			_ordo_say "the previous PostgreSQL on $data is still going away; retrying"
			sleep 2
			_ordo_pg_clear_stale_pidfile "$data" "$run"
			continue
		fi
		tail -n 20 "$log" >&2
		_ordo_err "PostgreSQL did not start; see $log and $run/pg_ctl.log"
		return 1
	done
	_ordo_err "PostgreSQL did not start after $((attempt - 1)) attempts; see $log"
	return 1
}

# Remove lock files a killed postmaster left: DATA/postmaster.pid and, in the socket
# directory RUN, .s.PGSQL.<port>.lock — only when the pid they name is gone.
_ordo_pg_clear_stale_pidfile() { # DATA RUN
	local pid lock
	for lock in "$1/postmaster.pid" "$2"/.s.PGSQL.*.lock; do
		[[ -f $lock ]] || continue
		pid=$(head -n 1 "$lock" 2>/dev/null) || continue
		if [[ $pid =~ ^[0-9]+$ ]] && ! _ordo_pid_alive "$pid"; then
			_ordo_say "removing the stale $lock (pid $pid is gone)"
			rm -f "$lock" "${lock%.lock}"
		fi
	done
	return 0
}

_ordo_pg_stop_data() { # USER BINDIR DATA [MODE: fast|immediate]
	_ordo_as "$1" "$2/pg_ctl" stop -D "$3" -m "${4:-fast}" -w -t 60 </dev/null >/dev/null 2>&1
}

_ordo_pg_stop() { # [MODE: fast|immediate]
	local pid=${_ordo_rec[PG_PID]:-} start=${_ordo_rec[PG_START]:-} data=${_ordo_rec[PG_DATA]:-}
	if [[ -n $pid && -n $data ]] && _ordo_pid_is "$pid" "$start" "$data"; then
		_ordo_pg_stop_data "${_ordo_rec[PG_USER]}" "${_ordo_rec[PG_BINDIR]}" "$data" "${1:-fast}" || true
		if ! _ordo_wait_gone "$pid" 10 && _ordo_pid_is "$pid" "$start" "$data"; then
			kill -QUIT "$pid" 2>/dev/null || true # immediate shutdown: the postmaster takes its children down
			if ! _ordo_wait_gone "$pid" 10 && _ordo_pid_is "$pid" "$start" "$data"; then
				kill -KILL "$pid" 2>/dev/null || true
				_ordo_wait_gone "$pid" 5 || true
			fi
		fi
		if _ordo_pid_alive "$pid"; then
			_ordo_err "PostgreSQL (pid $pid) did not stop"
			return 1
		fi
		_ordo_say "stopped private PostgreSQL on 127.0.0.1:${_ordo_rec[PG_PORT]:-?}"
	fi
	_ordo_forget pg
}

# ---------------------------------------------------------------- NATS

_ordo_nats_recorded_alive() {
	[[ -n ${_ordo_rec[NATS_PID]:-} ]] || return 1
	_ordo_pid_is "${_ordo_rec[NATS_PID]}" "${_ordo_rec[NATS_START]:-}" "${_ordo_rec[NATS_STORE]:-/nonexistent}" || return 1
	_ordo_nats_jetstream 127.0.0.1 "${_ordo_rec[NATS_PORT]:-0}"
}

# A nats-server already running on our store directory although stack.env lost track
# of it: adopt it from its pid file and command line.
_ordo_nats_adopt_running() { # STORE PIDFILE
	local pid start i port='' mport=
	local -a args
	[[ -r $2 ]] || return 1
	pid=$(<"$2")
	start=$(_ordo_proc_start "$pid") || return 1
	_ordo_pid_is "$pid" "$start" "$1" || return 1
	[[ $(_ordo_cmdline "$pid") == *nats-server* ]] || return 1
	mapfile -d '' -t args <"/proc/$pid/cmdline" || return 1
	for ((i = 0; i + 1 < ${#args[@]}; i++)); do
		case ${args[i]} in
		-p) port=${args[i + 1]} ;;
		-m) mport=${args[i + 1]} ;;
		esac
	done
	[[ $port =~ ^[0-9]+$ ]] && _ordo_nats_jetstream 127.0.0.1 "$port" || return 1
	_ordo_rec[NATS_PID]=$pid
	_ordo_rec[NATS_START]=$start
	_ordo_rec[NATS_PORT]=$port
	_ordo_rec[NATS_MONITOR_PORT]=$mport
	return 0
}

_ordo_nats_start() {
	local bin store log pidfile port=${1:-} mport attempt size i pid start up new_log conf
	local -a conf_args
	bin=$(_ordo_find_nats) || {
		_ordo_err "nats-server not found"
		return 1
	}
	store=$_ordo_state/nats
	log=$_ordo_state/nats.log
	pidfile=$_ordo_state/nats.pid
	mkdir -p "$store" || return 1
	_ordo_rec[NATS_BIN]=$bin
	_ordo_rec[NATS_STORE]=$store
	_ordo_rec[NATS_LOG]=$log
	_ordo_rec[NATS_PIDFILE]=$pidfile
	# A restart keeps the configuration the server was first started with.
	conf=${_ordo_rec[NATS_CONF]:-${ORDO_NATS_CONFIG:-}}
	conf_args=()
	if [[ -n $conf ]]; then
		[[ -r $conf ]] || {
			_ordo_err "ORDO_NATS_CONFIG=$conf is not a readable file (ordo nats-config --out DIR writes DIR/nats-server.conf)"
			return 1
		}
		conf=$(realpath "$conf")
		conf_args=(-c "$conf")
		_ordo_rec[NATS_CONF]=$conf
	fi

	if _ordo_nats_adopt_running "$store" "$pidfile"; then
		_ordo_nats_how=reused
		return 0
	fi
	for ((attempt = 1; attempt <= 5; attempt++)); do
		if [[ -z $port || $attempt -gt 1 ]] || _ordo_tcp_open 127.0.0.1 "$port"; then
			_ordo_free_port "${_ordo_rec[PG_PORT]:-}" || return 1
			port=$_ordo_port
		fi
		_ordo_free_port "${_ordo_rec[PG_PORT]:-} $port" || return 1
		mport=$_ordo_port
		if _ordo_tcp_open 127.0.0.1 "$port" || _ordo_tcp_open 127.0.0.1 "$mport"; then
			continue
		fi
		rm -f "$pidfile"
		size=$(stat -c %s "$log" 2>/dev/null || echo 0)
		# setsid: a Ctrl-C in the terminal reaches scripts/up, which stops ordo first
		# and then this server; the server must not get the SIGINT itself.
		(
			if [[ -n $_ordo_lock_fd ]]; then exec {_ordo_lock_fd}>&-; fi
			exec setsid "$bin" "${conf_args[@]}" -a 127.0.0.1 -p "$port" -m "$mport" -js -sd "$store" \
				-P "$pidfile" </dev/null >>"$log" 2>&1
		) &
		up=0
		for ((i = 0; i < 300; i++)); do
			pid=
			[[ -s $pidfile ]] && pid=$(<"$pidfile")
			if [[ -n $pid ]] && ! _ordo_pid_alive "$pid"; then break; fi
			# ($! may be a short-lived setsid when it had to fork; give the pid file time.)
			if [[ -z $pid ]] && ((i > 30)) && ! _ordo_pid_alive "$!"; then break; fi
			if [[ -n $pid ]] && _ordo_nats_jetstream 127.0.0.1 "$port"; then
				# Also wait for the monitor's /healthz (JetStream ready) when curl is there.
				if ! command -v curl >/dev/null 2>&1 ||
					curl -fsS -m 2 "http://127.0.0.1:$mport/healthz" >/dev/null 2>&1; then
					up=1
					break
				fi
			fi
			sleep 0.1
		done
		if ((up == 1)) && start=$(_ordo_proc_start "$pid"); then
			_ordo_rec[NATS_PID]=$pid
			_ordo_rec[NATS_START]=$start
			_ordo_rec[NATS_PORT]=$port
			_ordo_rec[NATS_MONITOR_PORT]=$mport
			_ordo_nats_how=started
			return 0
		fi
		# Not up: make sure the attempt leaves nothing behind.
		if [[ -n $pid ]] && _ordo_pid_alive "$pid" && [[ $(_ordo_cmdline "$pid") == *"$store"* ]]; then
			kill -KILL "$pid" 2>/dev/null || true
			_ordo_wait_gone "$pid" 5 || true
		fi
		wait "$!" 2>/dev/null || true
		new_log=$(tail -c +"$((size + 1))" "$log" 2>/dev/null) || new_log=
		if [[ ${new_log,,} == *"address already in use"* ]]; then
			_ordo_say "port $port or $mport was taken meanwhile; trying another"
			continue
		fi
		tail -n 20 "$log" >&2
		_ordo_err "nats-server did not start; see $log"
		return 1
	done
	_ordo_err "nats-server did not start after $((attempt - 1)) attempts; see $log"
	return 1
}

_ordo_nats_stop() { # [SIGNAL: TERM|KILL]
	local pid=${_ordo_rec[NATS_PID]:-} start=${_ordo_rec[NATS_START]:-} store=${_ordo_rec[NATS_STORE]:-}
	if [[ -n $pid && -n $store ]] && _ordo_pid_is "$pid" "$start" "$store"; then
		kill -"${1:-TERM}" "$pid" 2>/dev/null || true
		if ! _ordo_wait_gone "$pid" 15 && _ordo_pid_is "$pid" "$start" "$store"; then
			kill -KILL "$pid" 2>/dev/null || true
			_ordo_wait_gone "$pid" 5 || true
		fi
		wait "$pid" 2>/dev/null || true # reap it when it is our child
		if _ordo_pid_alive "$pid"; then
			_ordo_err "nats-server (pid $pid) did not stop"
			return 1
		fi
		rm -f "${_ordo_rec[NATS_PIDFILE]:-/nonexistent}"
		_ordo_say "stopped private NATS on 127.0.0.1:${_ordo_rec[NATS_PORT]:-?}"
	fi
	_ordo_forget nats
}

# ---------------------------------------------------------------- public functions

ordo_stack_up() {
	local mode=${ORDO_STACK:-auto} rc
	case $mode in
	auto | private | shared) ;;
	*)
		_ordo_err "ORDO_STACK must be auto, private or shared (it is '$mode')"
		return 1
		;;
	esac
	_ordo_state=$(_ordo_state_dir)
	_ordo_up_state=$_ordo_state
	_ordo_lock || return 1
	_ordo_stack_up_locked "$mode"
	rc=$?
	_ordo_unlock
	return "$rc"
}

_ordo_stack_up_locked() {
	local mode=$1 db_url=${DATABASE_URL:-postgres://127.0.0.1:5432/ordo} nats_url=${NATS_URL:-nats://127.0.0.1:4222}
	local self owner pg_private=0 nats_private=0 pg_alive=0 nats_alive=0 host port
	local pg_why="" nats_why="" missing=() pg_line nats_line started_now=() pg_prev_port='' nats_prev_port=
	_ordo_pg_how='' _ordo_nats_how=
	self=$(_ordo_self_id)
	owner=$self
	[[ -n ${_ORDO_STACK_DETACH:-} ]] && owner=none
	_ordo_env_load

	# What is recorded and still ours? Forget what died.
	# (Their ports are kept as the first choice for a restart: stable URLs.)
	if _ordo_pg_recorded_alive; then pg_alive=1; else
		if [[ -n ${_ordo_rec[PG_PID]:-} ]]; then
			_ordo_say "recorded private PostgreSQL (pid ${_ordo_rec[PG_PID]}) is gone; forgetting it"
		fi
		pg_prev_port=${_ordo_rec[PG_PORT]:-}
		_ordo_forget pg
	fi
	if _ordo_nats_recorded_alive; then nats_alive=1; else
		if [[ -n ${_ordo_rec[NATS_PID]:-} ]]; then
			_ordo_say "recorded private NATS (pid ${_ordo_rec[NATS_PID]}) is gone; forgetting it"
		fi
		nats_prev_port=${_ordo_rec[NATS_PORT]:-}
		_ordo_forget nats
	fi

	# Decide. A configured URL that points at our own recorded private server counts as
	# that private server (so it is reused, never cleaned away as a leftover).
	if [[ $mode == private ]]; then
		pg_private=1 nats_private=1
		pg_why="ORDO_STACK=private" nats_why="ORDO_STACK=private"
	else
		read -r host port < <(_ordo_url_hostport "$db_url" 5432)
		if ((pg_alive)) && [[ $host == 127.0.0.1 || $host == localhost ]] && [[ $port == "${_ordo_rec[PG_PORT]:-}" ]]; then
			pg_private=1
		elif ! _ordo_pg_url_ok "$db_url"; then
			pg_why="PostgreSQL not reachable at $db_url"
			pg_private=1
		fi
		read -r host port < <(_ordo_url_hostport "$nats_url" 4222)
		if ((nats_alive)) && [[ $host == 127.0.0.1 || $host == localhost ]] && [[ $port == "${_ordo_rec[NATS_PORT]:-}" ]]; then
			nats_private=1
		elif ! _ordo_nats_url_ok "$nats_url"; then
			if _ordo_tcp_open "$host" "$port"; then
				nats_why="no NATS JetStream at $nats_url (a server answers, without JetStream)"
			else
				nats_why="NATS not reachable at $nats_url"
			fi
			nats_private=1
		fi
		if [[ $mode == shared ]] && ((pg_private || nats_private)); then
			_ordo_err "ORDO_STACK=shared, but: ${pg_why:+$pg_why; }${nats_why:+$nats_why; }start them, point DATABASE_URL / NATS_URL at running servers, or unset ORDO_STACK to get private ones"
			return 1
		fi
	fi

	# Leftovers of dead runs that are not wanted now.
	if ((pg_alive && !pg_private)) && ! _ordo_owner_alive "${_ordo_rec[PG_OWNER]:-}"; then
		_ordo_say "stopping a private PostgreSQL left behind by an earlier run"
		_ordo_pg_stop || return 1
		pg_alive=0
	fi
	if ((nats_alive && !nats_private)) && ! _ordo_owner_alive "${_ordo_rec[NATS_OWNER]:-}"; then
		_ordo_say "stopping a private NATS left behind by an earlier run"
		_ordo_nats_stop || return 1
		nats_alive=0
	fi

	# Install what is missing.
	if ((pg_private && !pg_alive)) && ! _ordo_find_pg_bindir "" >/dev/null 2>&1; then missing+=(postgresql); fi
	if ((nats_private && !nats_alive)) && ! _ordo_find_nats >/dev/null 2>&1; then missing+=(nats-server); fi
	if ((${#missing[@]})); then
		_ordo_install "${missing[@]}" || return 1
	fi

	# Start or reuse.
	if ((pg_private)); then
		if ((pg_alive)); then
			_ordo_pg_how=reused
			if ! _ordo_owner_alive "${_ordo_rec[PG_OWNER]:-}"; then _ordo_rec[PG_OWNER]=$owner; fi
		else
			if ! _ordo_pg_start "$pg_prev_port"; then
				_ordo_forget pg
				_ordo_env_save
				return 1
			fi
			[[ $_ordo_pg_how == started ]] && started_now+=(pg)
			_ordo_rec[PG_OWNER]=$owner
		fi
		_ordo_rec[DATABASE_URL]="postgres://postgres@127.0.0.1:${_ordo_rec[PG_PORT]}/ordo"
		db_url=${_ordo_rec[DATABASE_URL]}
	fi
	if ((nats_private)); then
		if ((nats_alive)); then
			_ordo_nats_how=reused
			if ! _ordo_owner_alive "${_ordo_rec[NATS_OWNER]:-}"; then _ordo_rec[NATS_OWNER]=$owner; fi
		else
			if ! _ordo_nats_start "$nats_prev_port"; then
				_ordo_forget nats
				# Leave nothing behind that this call started.
				if [[ " ${started_now[*]} " == *" pg "* ]]; then _ordo_pg_stop || true; fi
				_ordo_env_save
				return 1
			fi
			_ordo_rec[NATS_OWNER]=$owner
		fi
		_ordo_rec[NATS_URL]="nats://127.0.0.1:${_ordo_rec[NATS_PORT]}"
		nats_url=${_ordo_rec[NATS_URL]}
	fi
	_ordo_env_save || {
		_ordo_err "cannot write $_ordo_state/stack.env"
		return 1
	}

	export DATABASE_URL=$db_url NATS_URL=$nats_url
	export ORDO_STACK_PG ORDO_STACK_NATS ORDO_STACK_NATS_CONF=

	if ((pg_private)); then
		ORDO_STACK_PG=private
		pg_line="PostgreSQL private on 127.0.0.1:${_ordo_rec[PG_PORT]} (${_ordo_pg_how}, pid ${_ordo_rec[PG_PID]}${pg_why:+; $pg_why})"
	else
		ORDO_STACK_PG=shared
		pg_line="PostgreSQL shared at $db_url"
	fi
	if ((nats_private)); then
		ORDO_STACK_NATS=private
		nats_line="NATS JetStream private on 127.0.0.1:${_ordo_rec[NATS_PORT]} (${_ordo_nats_how}, pid ${_ordo_rec[NATS_PID]}${nats_why:+; $nats_why}${_ordo_rec[NATS_CONF]:+; users of ${_ordo_rec[NATS_CONF]}})"
		ORDO_STACK_NATS_CONF=${_ordo_rec[NATS_CONF]:-}
		if [[ -n ${ORDO_NATS_CONFIG:-} && $(realpath "$ORDO_NATS_CONFIG" 2>/dev/null) != "$ORDO_STACK_NATS_CONF" ]]; then
			_ordo_say "note: the running private NATS was started ${ORDO_STACK_NATS_CONF:+with $ORDO_STACK_NATS_CONF}${ORDO_STACK_NATS_CONF:-without authentication}, not with ORDO_NATS_CONFIG=$ORDO_NATS_CONFIG; stop it (scripts/lib/stack.sh stop) to change that"
		fi
	else
		ORDO_STACK_NATS=shared
		nats_line="NATS JetStream shared at $nats_url"
	fi
	_ordo_say "$pg_line; $nats_line"
}

# Stop the private servers this shell owns.
ordo_stack_release() {
	local self rc=0
	_ordo_state=${_ordo_up_state:-$(_ordo_state_dir)}
	[[ -f $_ordo_state/stack.env ]] || return 0
	_ordo_lock || return 1
	_ordo_env_load
	self=$(_ordo_self_id)
	if [[ ${_ordo_rec[PG_OWNER]:-} == "$self" ]]; then _ordo_pg_stop || rc=1; fi
	if [[ ${_ordo_rec[NATS_OWNER]:-} == "$self" ]]; then _ordo_nats_stop || rc=1; fi
	_ordo_env_save || rc=1
	_ordo_unlock
	return "$rc"
}

# Stop every recorded private server (only ever processes this helper started).
ordo_stack_down() {
	local rc=0
	_ordo_state=$(_ordo_state_dir)
	[[ -f $_ordo_state/stack.env ]] || return 0
	_ordo_lock || return 1
	_ordo_env_load
	_ordo_pg_stop || rc=1
	_ordo_nats_stop || rc=1
	_ordo_env_save || rc=1
	_ordo_unlock
	return "$rc"
}

# Stop, then delete the private data (PostgreSQL data and logs, JetStream store).
ordo_stack_purge() {
	local base dir
	ordo_stack_down || return 1
	_ordo_state=$(_ordo_state_dir)
	[[ -d $_ordo_state ]] || return 0
	_ordo_lock || return 1
	base=$_ordo_state
	if _ordo_is_root; then
		dir=/var/tmp/ordo-$(printf '%s' "$_ordo_state" | sha256sum | cut -c1-16)
		if [[ -d $dir && ! -L $dir && -O $dir ]]; then
			rm -rf "${dir:?}/pg" "${dir:?}/pg-run"
			rmdir "$dir" 2>/dev/null || true
		fi
	fi
	rm -rf "${base:?}/pg" "${base:?}/pg-run" "${base:?}/nats" "${base:?}/nats.log" "${base:?}/nats.pid" \
		"${base:?}/apt.log" "${base:?}/stack.env"
	_ordo_unlock
	rm -f "${base:?}/stack.lock"
	rmdir "$base" 2>/dev/null || true
	return 0
}

# Restart a private server this shell owns on the same port and data directory.
ordo_stack_restart() { # pg|nats [HOW]
	local which=${1:-} how=${2:-} self port rc=0 started conf
	case $which:$how in
	pg: | pg:fast | pg:immediate | nats: | nats:term | nats:kill) ;;
	*)
		_ordo_err "usage: ordo_stack_restart pg [fast|immediate] | nats [term|kill]"
		return 2
		;;
	esac
	_ordo_state=${_ordo_up_state:-$(_ordo_state_dir)}
	_ordo_lock || return 1
	_ordo_env_load
	self=$(_ordo_self_id)
	started=$SECONDS
	if [[ $which == pg ]]; then
		if [[ ${_ordo_rec[PG_OWNER]:-} != "$self" ]] || ! _ordo_pg_recorded_alive; then
			_ordo_err "no running private PostgreSQL owned by this shell to restart"
			_ordo_unlock
			return 1
		fi
		port=${_ordo_rec[PG_PORT]}
		_ordo_pg_stop "${how:-fast}" || rc=1
		if ((rc == 0)) && _ordo_pg_start "$port"; then
			_ordo_rec[PG_OWNER]=$self
			_ordo_rec[DATABASE_URL]="postgres://postgres@127.0.0.1:${_ordo_rec[PG_PORT]}/ordo"
			if [[ ${_ordo_rec[PG_PORT]} != "$port" ]]; then
				_ordo_err "PostgreSQL came back on port ${_ordo_rec[PG_PORT]}, not $port (taken meanwhile?)"
				rc=1
			fi
		else
			rc=1
		fi
	else
		if [[ ${_ordo_rec[NATS_OWNER]:-} != "$self" ]] || ! _ordo_nats_recorded_alive; then
			_ordo_err "no running private NATS owned by this shell to restart"
			_ordo_unlock
			return 1
		fi
		port=${_ordo_rec[NATS_PORT]}
		conf=${_ordo_rec[NATS_CONF]:-}
		how=${how:-term}
		_ordo_nats_stop "${how^^}" || rc=1
		# the same users as before
		[[ -n $conf ]] && _ordo_rec[NATS_CONF]=$conf
		if ((rc == 0)) && _ordo_nats_start "$port"; then
			_ordo_rec[NATS_OWNER]=$self
			_ordo_rec[NATS_URL]="nats://127.0.0.1:${_ordo_rec[NATS_PORT]}"
			if [[ ${_ordo_rec[NATS_PORT]} != "$port" ]]; then
				_ordo_err "NATS came back on port ${_ordo_rec[NATS_PORT]}, not $port (taken meanwhile?)"
				rc=1
			fi
		else
			rc=1
		fi
	fi
	_ordo_env_save || rc=1
	_ordo_unlock
	if ((rc == 0)); then
		_ordo_say "restarted private $([[ $which == pg ]] && echo PostgreSQL || echo NATS) on 127.0.0.1:$port (${how:-fast} stop; down $((SECONDS - started)) s)"
	fi
	return "$rc"
}

ordo_stack_status() {
	local state alive
	state=$(_ordo_state_dir)
	if [[ ! -f $state/stack.env ]]; then
		printf 'no private servers recorded in %s\n' "$state"
		return 0
	fi
	_ordo_state=$state
	_ordo_env_load
	if [[ -n ${_ordo_rec[PG_PID]:-} ]]; then
		alive=gone
		_ordo_pg_recorded_alive && alive=running
		printf 'PostgreSQL %s  %s  pid %s  owner %s  data %s\n' "$alive" "${_ordo_rec[DATABASE_URL]:-}" \
			"${_ordo_rec[PG_PID]}" "${_ordo_rec[PG_OWNER]:-?}" "${_ordo_rec[PG_DATA]:-?}"
	fi
	if [[ -n ${_ordo_rec[NATS_PID]:-} ]]; then
		alive=gone
		_ordo_nats_recorded_alive && alive=running
		printf 'NATS       %s  %s  pid %s  owner %s  store %s\n' "$alive" "${_ordo_rec[NATS_URL]:-}" \
			"${_ordo_rec[NATS_PID]}" "${_ordo_rec[NATS_OWNER]:-?}" "${_ordo_rec[NATS_STORE]:-?}"
	fi
}

# ---------------------------------------------------------------- as a command

if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
	set -euo pipefail
	case ${1:-} in
	start)
		_ORDO_STACK_DETACH=1
		ordo_stack_up
		printf 'export DATABASE_URL=%q NATS_URL=%q\n' "$DATABASE_URL" "$NATS_URL"
		;;
	env)
		ORDO_STACK=${ORDO_STACK:-auto} _ORDO_STACK_DETACH=1 ordo_stack_up 2>/dev/null
		printf 'export DATABASE_URL=%q NATS_URL=%q\n' "$DATABASE_URL" "$NATS_URL"
		;;
	stop) ordo_stack_down ;;
	purge) ordo_stack_purge ;;
	status) ordo_stack_status ;;
	*)
		cat >&2 <<'EOF'
usage: scripts/lib/stack.sh start|stop|purge|status|env
  start   start (or reuse) the local stack and leave it running until `stop`;
          prints export lines for DATABASE_URL and NATS_URL
  env     like start, quietly: eval "$(scripts/lib/stack.sh env)"
  stop    stop the private servers recorded in $ORDO_STATE_DIR (default <repo>/.ordo)
  purge   stop them and delete their data
  status  show what is recorded and whether it runs
Environment: ORDO_STACK (auto|private|shared), DATABASE_URL, NATS_URL, ORDO_STATE_DIR.
EOF
		exit 2
		;;
	esac
fi
