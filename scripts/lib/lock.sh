# shellcheck shell=bash
# lock.sh - sourced by the scripts that serialise their concurrent runs (tools.sh, proto-tools.sh,
# vuln.sh); defines lock and nothing else.

# lock FILE FD NAME: hold an exclusive lock on FILE until the calling script exits: flock(1) on
# descriptor FD where flock exists (Linux); elsewhere (macOS has none) the directory FILE.d, which
# mkdir makes atomically. NAME starts the message shown while another run holds it.
lock() {
  local file="$1" fd="$2" name="$3"
  if command -v flock >/dev/null 2>&1; then
    # A numbered descriptor from a variable: `exec {var}>` needs bash 4.1, macOS has 3.2.
    eval "exec ${fd}>\"\${file}\""
    flock "${fd}"
    return
  fi
  local waited=0
  until mkdir "${file}.d" 2>/dev/null; do
    if ((++waited == 10)); then
      echo "${name}: waiting for ${file}.d, held by another run (remove it if none is running)" >&2
    fi
    sleep 1
  done
  # shellcheck disable=SC2064 # the path is expanded now, on purpose
  trap "rmdir $(printf %q "${file}.d") 2>/dev/null || true" EXIT
}
