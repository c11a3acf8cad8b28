#!/usr/bin/env bash
# Renders the sample mailings end to end on SQLite: three pools (welcome,
# flash, referral), their codes, a welcome e-mail as JSON Lines and as .eml
# files, and an SMS, into ./demo (or the folder given as the first argument).
#
# Without a folder the store is ./promomail.db, the one every promomail
# command uses by default, so the README's tour runs on it as written; with a
# folder the store goes inside it. Safe to run again: it starts over, but
# never removes a ./promomail.db it did not make.
set -euo pipefail

samples=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
if [ $# -gt 0 ]; then
    out=$1
    store="$out/promomail.db"
else
    out=demo
    store=promomail.db
    # The demo records the store it made; any other file there is someone's data.
    if [ -e "$store" ] && ! cmp -s <(echo "$(pwd)/$store") "$out/.demo-store" 2>/dev/null; then
        echo "Error: $(pwd)/$store exists and was not made by this demo;" \
            "move it away, or give the demo a folder: bash $0 FOLDER" >&2
        exit 1
    fi
    rm -f "$store" "$store-wal" "$store-shm"
fi
rm -rf "$out"
mkdir -p "$out"
export PROMOMAIL_DB="sqlite:///$store"
promomail pool create "Welcome 20%" --id welcome \
    --description "20% off the first order" --low-stock 10 --activate
[ $# -gt 0 ] || echo "$(pwd)/$store" > "$out/.demo-store"
promomail codes upload welcome "$samples/welcome-codes.txt"
promomail pool create "Weekend flash sale" --id flash \
    --description "15-30% off this weekend" --activate
promomail codes upload flash "$samples/flash-codes.csv"
# referral.j2 gives each customer three codes to share.
promomail pool create "Referral 25%" --id referral --per-customer 3 \
    --description "25% off a friend's first order" --activate
promomail codes generate referral --count 60 --length 8 --prefix REF-

promomail check "$samples/welcome.j2" --recipients "$samples/recipients.csv"
promomail render "$samples/welcome.j2" --recipients "$samples/recipients.csv" \
    --mailing welcome-demo --out "$out/welcome.jsonl"
# The same mailing again, as e-mail files: the same codes, nothing new issued.
promomail render "$samples/welcome.j2" --recipients "$samples/recipients.csv" \
    --mailing welcome-demo --format eml --out "$out/welcome-eml"
promomail render "$samples/sms.j2" --recipients "$samples/recipients.csv" \
    --mailing flash-sms-demo --out "$out/sms.jsonl"

promomail mailings
promomail pool list
echo
echo "Store: $(cd "$(dirname "$store")" && pwd)/$(basename "$store")" \
    "(every promomail command here uses it${1:+ with --db sqlite:///$store})"
echo "Rendered messages: $out/welcome.jsonl, $out/welcome-eml/, $out/sms.jsonl"
