#!/usr/bin/env bash
# Copies every file under SRC into the bucket as s3://BUCKET/PREFIX/<path below SRC>, one PUT per
# file signed by curl's own SigV4 (not by blockrep's client, so that a test reading the objects
# back with blockrep checks one implementation against another). Needs the environment of
# tests/rgw/start.sh's DIR/env. Creates the bucket if it is not there. Prints how many objects.
#   tests/rgw/put_tree.sh SRC BUCKET PREFIX
set -euo pipefail
src=${1:?usage: put_tree.sh SRC BUCKET PREFIX}
bucket=${2:?usage: put_tree.sh SRC BUCKET PREFIX}
prefix=${3:?usage: put_tree.sh SRC BUCKET PREFIX}
: "${BLOCKREP_S3_ENDPOINT:?source the env file tests/rgw/start.sh wrote}"
put() {  # put KEY [FILE]: the body's SHA-256 goes in x-amz-content-sha256
  local file=${2:-/dev/null}
  curl -sS --fail --aws-sigv4 "aws:amz:default:s3" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \
    --cacert "$BLOCKREP_S3_CA" -H "x-amz-content-sha256: $(sha256sum "$file" | cut -d' ' -f1)" \
    ${2:+--upload-file "$file"} -X PUT -o /dev/null "$BLOCKREP_S3_ENDPOINT/$bucket${1:+/$1}"
}
put "" 2>/dev/null || true  # the bucket; already there is fine
n=0
while IFS= read -r f; do
  put "$prefix/${f#"$src"/}" "$f" || { echo "put_tree.sh: upload of $f failed" >&2; exit 1; }
  n=$((n + 1))
done < <(find "$src" -type f ! -name '*.lock' ! -name '*.tmp' | sort)
echo "$n"
