"""A write-once (WORM) S3 server for tests: moto's S3 server, in-process, behind a WSGI filter.

Usage: python worm_s3.py --host 127.0.0.1 --port PORT

It emulates a bucket whose objects are protected by object lock: an object, once written, can be
neither overwritten nor deleted.

* PUT of a key that already exists (plain upload or server-side copy) -> 403 AccessDenied;
  with `If-None-Match: *` (a conditional create) -> 412 PreconditionFailed, as S3 answers it.
* CompleteMultipartUpload (POST ?uploadId=...) for a key that already exists -> the same.
* DELETE of an object, and multi-object delete (POST ?delete) -> 403 AccessDenied.
  DELETE of a bucket -> 403 AccessDenied too. Aborting a multipart upload (DELETE ?uploadId=...)
  is allowed: it removes no object.
* Everything else (GET, HEAD, list, bucket creation, multipart initiate and parts, tagging, ...)
  is plain moto.

Existence is checked by asking moto itself (an in-process HEAD of the same key), and the check
and the write it guards run under one lock, so two racing first writes cannot both succeed.
Requests must be path-style (http://127.0.0.1:PORT/bucket/key).
"""

import argparse
import io
import os
import sys
import threading
import uuid
from urllib.parse import parse_qs

from werkzeug.serving import run_simple

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)

# Sub-resources whose PUT changes an object's metadata, not its bytes.
METADATA_SUBRESOURCES = {"acl", "tagging", "retention", "legal-hold"}


def xml_escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class WriteOnce:
    def __init__(self, app):
        self.app = app
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        bucket, _, key = environ.get("PATH_INFO", "/").lstrip("/").partition("/")

        if method == "DELETE":
            if key and "uploadId" in query:
                return self.app(environ, start_response)  # abort multipart upload
            return self.refuse(start_response, bucket, key, "Access Denied because object protected by object lock.")
        if method == "POST" and "delete" in query:
            return self.refuse(start_response, bucket, key, "Access Denied because object protected by object lock.")

        guarded = bool(key) and (
            (method == "PUT" and "uploadId" not in query and not (METADATA_SUBRESOURCES & query.keys()))
            or (method == "POST" and "uploadId" in query)  # CompleteMultipartUpload
        )
        if not guarded:
            return self.app(environ, start_response)

        with self.lock:
            if self.exists(environ):
                if environ.get("HTTP_IF_NONE_MATCH", "").strip() == "*":
                    return self.error(start_response, "412 Precondition Failed", "PreconditionFailed",
                                      "At least one of the pre-conditions you specified did not hold", bucket, key)
                return self.refuse(start_response, bucket, key, "Access Denied: object is write-once and already exists.")
            # Run the write to completion (moto builds the whole response) while holding the lock.
            status_headers = []

            def capture(status, headers, exc_info=None):
                status_headers[:] = [status, headers]
                return lambda data: None

            body = self.app(environ, capture)
            try:
                chunks = list(body)
            finally:
                if hasattr(body, "close"):
                    body.close()
        start_response(*status_headers)
        return chunks

    def exists(self, environ):
        head = {k: v for k, v in environ.items() if not k.startswith("HTTP_X_AMZ_COPY_SOURCE")}
        raw = environ.get("RAW_URI") or environ.get("REQUEST_URI") or environ.get("PATH_INFO", "/")
        head.update({
            "REQUEST_METHOD": "HEAD",
            "QUERY_STRING": "",
            "RAW_URI": raw.split("?", 1)[0],
            "REQUEST_URI": raw.split("?", 1)[0],
            "CONTENT_LENGTH": "0",
            "wsgi.input": io.BytesIO(b""),
        })
        for h in ("HTTP_IF_NONE_MATCH", "HTTP_IF_MATCH", "HTTP_CONTENT_MD5", "HTTP_TRANSFER_ENCODING",
                  "HTTP_X_AMZ_DECODED_CONTENT_LENGTH", "HTTP_CONTENT_ENCODING"):
            head.pop(h, None)
        result = []

        def capture(status, headers, exc_info=None):
            result.append(int(status.split(" ", 1)[0]))
            return lambda data: None

        body = self.app(head, capture)
        try:
            for _ in body:
                pass
        finally:
            if hasattr(body, "close"):
                body.close()
        # Fail closed: anything but a clear 404 (e.g. 403 for an anonymous request) counts as present.
        return not result or result[0] != 404

    def refuse(self, start_response, bucket, key, message):
        return self.error(start_response, "403 Forbidden", "AccessDenied", message, bucket, key)

    def error(self, start_response, status, code, message, bucket, key):
        request_id = uuid.uuid4().hex.upper()
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{code}</Code><Message>{xml_escape(message)}</Message>"
            + (f"<Key>{xml_escape(key)}</Key>" if key else f"<BucketName>{xml_escape(bucket)}</BucketName>")
            + f"<RequestId>{request_id}</RequestId></Error>"
        ).encode()
        start_response(status, [
            ("Content-Type", "application/xml"),
            ("Content-Length", str(len(body))),
            ("x-amz-request-id", request_id),
        ])
        return [body]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, required=True)
    args = parser.parse_args()
    os.environ.setdefault("MOTO_PORT", str(args.port))
    app = DomainDispatcherApplication(create_backend_app)
    print(f"worm_s3: write-once S3 on http://{args.host}:{args.port}", file=sys.stderr, flush=True)
    run_simple(args.host, args.port, WriteOnce(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
