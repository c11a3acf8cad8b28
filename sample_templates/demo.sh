#!/usr/bin/env bash
# Renders the sample mailings end to end on SQLite, in ./demo (or the folder
# given as the first argument): two pools, their codes, a welcome e-mail as
# JSON Lines and as .eml files, and an SMS. Safe to run again: it starts over.
set -euo pipefail

samples=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=${1:-demo}
rm -rf "$out"
mkdir -p "$out"
export PROMOMAIL_DB="sqlite:///$out/promomail.db"

promomail pool create "Welcome 20%" --id welcome \
    --description "20% off the first order" --low-stock 10 --activate
promomail codes upload welcome "$samples/welcome-codes.txt"
promomail pool create "Weekend flash sale" --id flash \
    --description "15-30% off this weekend" --activate
promomail codes upload flash "$samples/flash-codes.csv"

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
echo "Rendered messages: $out/welcome.jsonl, $out/welcome-eml/, $out/sms.jsonl"
