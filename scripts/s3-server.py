#!/usr/bin/env python3
"""An S3-compatible server for the e2e backup tests on the real node (moto, from the
venv scripts/setup.sh makes): listens on 0.0.0.0:PORT, so pods reach it through the
node's bridge address, with one bucket and an IAM user whose access key is the only one
accepted (authentication on: a wrong secret key is refused, as by a real store).

Usage: s3-server.py PORT ENV_FILE. Writes E2E_S3_BUCKET, E2E_S3_ACCESS_KEY_ID and
E2E_S3_SECRET_ACCESS_KEY to ENV_FILE once it serves, then runs until killed.
"""
import json
import os
import sys
import time
import urllib.request

import boto3
from moto.server import ThreadedMotoServer

port = int(sys.argv[1])
env_file = sys.argv[2]
server = ThreadedMotoServer(ip_address="0.0.0.0", port=port)
server.start()
url = f"http://127.0.0.1:{port}"
setup = dict(endpoint_url=url, region_name="us-east-1", aws_access_key_id="setup", aws_secret_access_key="setup")
iam = boto3.client("iam", **setup)
iam.create_user(UserName="backup")
policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
iam.put_user_policy(UserName="backup", PolicyName="s3-all", PolicyDocument=json.dumps(policy))
key = iam.create_access_key(UserName="backup")["AccessKey"]
boto3.client("s3", **setup).create_bucket(Bucket="backups")
req = urllib.request.Request(f"{url}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"})
assert b"ok" in urllib.request.urlopen(req).read(), "moto did not switch authentication on"
with open(env_file + ".tmp", "w") as f:
    f.write(f"E2E_S3_BUCKET=backups\nE2E_S3_ACCESS_KEY_ID={key['AccessKeyId']}\n")
    f.write(f"E2E_S3_SECRET_ACCESS_KEY={key['SecretAccessKey']}\n")

os.rename(env_file + ".tmp", env_file)
print(f"s3-server: serving on 0.0.0.0:{port}", flush=True)
while True:
    time.sleep(3600)
