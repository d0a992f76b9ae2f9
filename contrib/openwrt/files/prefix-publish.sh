#!/bin/sh
# prefix-publish -- the prefix-state message (docs/wire-protocol.md) from a POSIX shell,
# for routers too small for Python. busybox ash, openssl, and mosquitto_pub or curl.
#
#   prefix-publish -r ROUTER -i INTERFACE [transport] PREFIX/LEN,PREFERRED,VALID ...
#   PREFIXES="2001:db8::/56,3600,7200 ..." prefix-publish -r edge -i wan [transport]   # odhcp6c's format
#
# transport (any of them; with none the message goes to stdout):
#   --mqtt HOST[:PORT] or [IPV6]:PORT [--user USER --password-file FILE] [--cafile FILE] [--base TOPIC]
#   --webhook URL --secret-file FILE [--cafile FILE]
# other options:
#   --state FILE    sequence reservation (default /etc/prefix-publish.seq; it must survive reboots)
#   --source KIND   dhcpv6-pd (default), ra, kernel-ra or address
#   --stdout        print the message as well
#
# It sends the full set it is given: call it with every prefix the interface
# holds. Lifetimes are remaining seconds; 4294967295 is infinite.

set -eu

SCHEMA=https://dynamic-prefix.io/schemas/prefix-state/v1
router='' iface='' mqtt='' user='' password_file='' cafile='' base=dynamic-prefix webhook='' secret_file=''
state_file=/etc/prefix-publish.seq source=dhcpv6-pd to_stdout='' entries=''

die() { echo "prefix-publish: $*" >&2; exit 2; }

while [ $# -gt 0 ]; do
	case "$1" in
		-r|--router) router=$2; shift 2 ;;
		-i|--interface) iface=$2; shift 2 ;;
		--mqtt) mqtt=$2; shift 2 ;;
		--user) user=$2; shift 2 ;;
		--password-file) password_file=$2; shift 2 ;;
		--cafile) cafile=$2; shift 2 ;;
		--base) base=$2; shift 2 ;;
		--webhook) webhook=$2; shift 2 ;;
		--secret-file) secret_file=$2; shift 2 ;;
		--state) state_file=$2; shift 2 ;;
		--source) source=$2; shift 2 ;;
		--stdout) to_stdout=1; shift ;;
		-h|--help) sed -n '2,17p' "$0"; exit 0 ;;
		-*) die "unknown option $1 (see --help)" ;;
		*) entries="$entries $1"; shift ;;
	esac
done
[ -n "$entries" ] || entries=${PREFIXES:-}

# The wire contract's name pattern: nothing here ever needs JSON escaping.
valid_name() { printf '%s' "$1" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9._:@-]{0,63}$'; }
valid_name "$router" || die "-r ROUTER is required: letters, digits and ._:@- only"
valid_name "$iface" || die "-i INTERFACE is required: letters, digits and ._:@- only"
case "$source" in dhcpv6-pd|ra|kernel-ra|address) ;; *) die "--source must be dhcpv6-pd, ra, kernel-ra or address" ;; esac
[ -z "$webhook" ] || [ -n "$secret_file" ] || die "--webhook needs --secret-file (the shared HMAC key)"
[ -n "$mqtt$webhook" ] || to_stdout=1

INFINITE=4294967295

# -- jshn-style helpers: build the JSON text piece by piece ------------------------------

json_lifetime() { if [ "$1" = "$INFINITE" ]; then printf 'null'; else printf '%s' "$1"; fi; }

# One prefix object: json_prefix PREFIX STATE VALID PREFERRED
json_prefix() {
	printf '{"prefix":"%s","state":"%s","validLifetime":%s,"preferredLifetime":%s,"sources":["%s"],"routers":[]}' \
		"$1" "$2" "$(json_lifetime "$3")" "$(json_lifetime "$4")" "$source"
}

# -- the prefixes, best first ---------------------------------------------------------------

preferred_list='' deprecated_list='' withdrawn_list=''
for entry in $entries; do
	case "$entry" in
		*,*,*) ;;  # odhcp6c may add ,class=...,excluded=... after VALID: ignored
		*) die "$entry: expected PREFIX/LEN,PREFERRED,VALID" ;;
	esac
	prefix=${entry%%,*}
	rest=${entry#*,}
	pref=${rest%%,*}
	rest=${rest#*,}
	valid=${rest%%,*}
	printf '%s' "$prefix" | grep -Eq '^[0-9A-Fa-f:]+/[0-9]{1,2}$' || die "$entry: expected PREFIX/LEN,PREFERRED,VALID"
	for lifetime in "$pref" "$valid"; do
		case "$lifetime" in *[!0-9]*|'') die "$entry: lifetimes are whole seconds" ;; esac
	done
	prefix=$(printf '%s' "$prefix" | tr 'A-F' 'a-f')
	if [ "$valid" = 0 ]; then
		withdrawn_list="$withdrawn_list,$(json_prefix "$prefix" withdrawn 0 0)"
	elif [ "$pref" = 0 ]; then
		deprecated_list="$deprecated_list,$(json_prefix "$prefix" deprecated "$valid" 0)"
	else
		[ "$pref" = "$INFINITE" ] || [ "$valid" = "$INFINITE" ] || [ "$pref" -le "$valid" ] ||
			die "$entry: preferred lifetime exceeds valid lifetime (RFC 4862)"
		preferred_list="$preferred_list,$(json_prefix "$prefix" preferred "$valid" "$pref")"
	fi
done
prefixes="${preferred_list}${deprecated_list}${withdrawn_list}"
prefixes=${prefixes#,}

# -- boot id and a sequence that never goes backwards --------------------------------------

boot_file=/tmp/prefix-publish.boot    # /tmp is cleared on reboot: a new boot id per boot
[ -s "$boot_file" ] || od -An -N8 -tx1 /dev/urandom | tr -d ' \n' > "$boot_file"
boot=$(cat "$boot_file")

now=$(date +%s)
last=0
[ -s "$state_file" ] && last=$(cat "$state_file")
case "$last" in *[!0-9]*|'') last=0 ;; esac
sequence=$((last + 1))
# A clock that is plausibly synced (after 2025-01-01) seeds the sequence, so a
# lost state file cannot send it backwards; an unsynced one is not trusted.
if [ "$now" -ge 1735689600 ] && [ $((now * 1000)) -gt "$sequence" ]; then
	sequence=$((now * 1000))
fi
tmp=$(mktemp "$state_file.XXXXXX") || die "cannot write next to $state_file"
printf '%s\n' "$sequence" > "$tmp" && mv "$tmp" "$state_file"

observed=$(date -u +%Y-%m-%dT%H:%M:%SZ)
message=$(printf '{"schema":"%s","version":1,"router":"%s","interface":"%s","boot":"%s","sequence":%s,"observedAt":"%s","prefixes":[%s]}' \
	"$SCHEMA" "$router" "$iface" "$boot" "$sequence" "$observed" "$prefixes")

# -- send ------------------------------------------------------------------------------------

status=0
[ -z "$to_stdout" ] || printf '%s\n' "$message"

if [ -n "$mqtt" ]; then
	port=''
	case "$mqtt" in
		\[*\]:*) host=${mqtt#\[}; host=${host%%\]*}; port=${mqtt##*\]:} ;;  # [IPv6]:PORT
		\[*\]) host=${mqtt#\[}; host=${host%\]} ;;
		*:*:*) host=$mqtt ;;  # a bare IPv6 address: no port
		*:*) host=${mqtt%:*}; port=${mqtt##*:} ;;
		*) host=$mqtt ;;
	esac
	set -- -h "$host" -q 1 -r -t "$base/$router/$iface/state" -m "$message"
	[ -z "$port" ] || set -- "$@" -p "$port"
	[ -z "$cafile" ] || set -- "$@" --cafile "$cafile"
	if [ -n "$user" ]; then
		[ -r "$password_file" ] || die "--user needs a readable --password-file"
		set -- "$@" -u "$user" -P "$(cat "$password_file")"
	fi
	mosquitto_pub "$@" || { echo "prefix-publish: mosquitto_pub failed" >&2; status=1; }
fi

if [ -n "$webhook" ]; then
	[ -r "$secret_file" ] || die "cannot read --secret-file $secret_file"
	secret=$(cat "$secret_file")
	reply=$(mktemp) || die "cannot create a temporary file"
	attempt=1
	delay=1
	while :; do
		ts=$(date +%s)
		signature=$(printf '%s.%s' "$ts" "$message" | openssl dgst -sha256 -hmac "$secret" -r | cut -d' ' -f1)
		set -- -sS -o "$reply" -w '%{http_code}' -X POST \
			-H 'Content-Type: application/json' -H "X-Dynamic-Prefix-Timestamp: $ts" \
			-H "X-Dynamic-Prefix-Signature: sha256=$signature" --data-binary "$message"
		[ -z "$cafile" ] || set -- "$@" --cacert "$cafile"
		code=$(curl "$@" "$webhook") || code=000
		case "$code" in
			2??) break ;;
			408|425|429|5??|000) ;;
			*) echo "prefix-publish: the webhook refused the message ($code): $(cat "$reply" 2>/dev/null)" >&2
			   status=1; break ;;
		esac
		if [ "$attempt" -ge 5 ]; then
			echo "prefix-publish: the webhook did not answer 2xx after $attempt attempts (last: $code)" >&2
			status=1
			break
		fi
		sleep "$delay"
		attempt=$((attempt + 1))
		delay=$((delay * 2))
	done
	rm -f "$reply"
fi
exit "$status"
