#!/usr/bin/env bash
# Test certificates with the openssl CLI, in the directory given: a CA
# (ca.pem), and signed by it server (localhost, 127.0.0.1), wrong (another
# host name), expired (2020), client; and self (self-signed, localhost). ECDSA
# P-256 keys beside each as NAME.key. For the specs and the examples.
# usage: tools/mkcerts.sh DIR
set -e
d=$1; cd "$d"
ec() { openssl ecparam -name prime256v1 -genkey -noout -out "$1" 2>/dev/null; }
ec ca.key
openssl req -x509 -new -key ca.key -subj "/CN=loom test CA" -days 3650 -out ca.pem \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
leaf() { # name subject san
  ec "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr" -addext "subjectAltName=$3" 2>/dev/null
}
sign() { # name [extra ca args]
  n=$1; shift
  openssl ca -batch -config ca.cnf -cert ca.pem -keyfile ca.key -in "$n.csr" -out "$n.pem" -notext "$@" 2>/dev/null
}
mkdir -p db/new; : > db/index.txt; echo 1000 > db/serial
cat > ca.cnf <<CNF
[ca]
default_ca = d
[d]
dir = $d/db
database = \$dir/index.txt
new_certs_dir = \$dir/new
serial = \$dir/serial
default_md = sha256
default_days = 3650
policy = p
copy_extensions = copy
unique_subject = no
[p]
commonName = supplied
CNF
leaf server localhost "DNS:localhost,IP:127.0.0.1"; sign server
leaf wrong other.example "DNS:other.example"; sign wrong
leaf expired localhost "DNS:localhost,IP:127.0.0.1"; sign expired -startdate 20200101000000Z -enddate 20200201000000Z
leaf client "loom client" "DNS:client"; sign client
ec self.key
openssl req -x509 -new -key self.key -subj "/CN=localhost" -days 365 -out self.pem -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
