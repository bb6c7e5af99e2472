#!/usr/bin/env python3
"""HL7 v2 peers that no one here wrote, for the Rust tests of pacs-hl7.

    hl7_peer.py send --port P [--host H] [--raw] [--one-connection] FILE...
        Sends each file over MLLP with python-hl7's MLLPClient (what its `mllp_send`
        command uses) and prints a JSON list, one entry per file:
        {"file", "code" (MSA-1 as python-hl7 reads it), "control_id" (MSA-2), "ack", "error"}.
        Line endings are turned into CR unless --raw. One connection per file unless
        --one-connection.

    hl7_peer.py validate FILE
        Strict hl7apy validation of the message; prints {"file", "valid", "mode", "errors"}.
        hl7apy models the ORM^O01 order-detail choice (OBR|RQD|RQ1|RXO|ODS|ODT) as if every
        branch were required, so no valid ORM^O01 passes its message-level validation; for
        that one error the segments are validated one by one, strictly ("mode": "segments").

    hl7_peer.py listen --port P --out DIR [--nak] [--max-seconds N]
        An MLLP server standing in for a RIS: saves every message received in DIR
        (0001.hl7, …, written then renamed) and answers with python-hl7's create_ack: AA, or
        AR with --nak. Prints {"listening": PORT} once bound (port 0 picks one). Stops by
        itself after --max-seconds.

    hl7_peer.py ris --port P --out DIR [--max-seconds N]
        The same RIS stand-in built on hl7apy's MLLPServer (one message per connection, as
        hl7apy serves): handles ORM^O01 (the end-of-exam notice), saves it in DIR, parses it
        with hl7apy and answers an hl7apy-built ACK (AA); other types get AR from its error
        handler. Prints {"listening": PORT}.
"""

import argparse
import json
import os
import socket
import socketserver
import sys
import threading

import hl7
import hl7.client
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message, parse_segment

SB, EB, CR = b"\x0b", b"\x1c", b"\x0d"


def normalise(data):
    return data.replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def read_ack(client, first, timeout):
    """MLLPClient.send returns what one recv() got; read on to the end block."""
    data = first
    client.socket.settimeout(timeout)
    while data and EB not in data:
        more = client.socket.recv(65536)
        if not more:
            break
        data += more
    return data


def describe_ack(data):
    if not data:
        return {"code": None, "control_id": None, "ack": None, "error": "connection closed"}
    body = data.strip(SB + EB + CR + b"\n")
    text = body.decode("latin-1")
    try:
        msa = hl7.parse(text).segment("MSA")
        return {"code": str(msa[1]), "control_id": str(msa[2]), "ack": text, "error": None}
    except Exception as e:  # an answer python-hl7 cannot read is a finding, not a crash
        return {"code": None, "control_id": None, "ack": text, "error": "unreadable ACK: %s" % e}


def send(args):
    results = []
    client = None
    for path in args.files:
        with open(path, "rb") as f:
            data = f.read()
        if not args.raw:
            data = normalise(data).rstrip(CR)
        entry = {"file": os.path.basename(path)}
        try:
            if client is None:
                client = hl7.client.MLLPClient(args.host, args.port)
                client.socket.settimeout(args.timeout)
            reply = read_ack(client, client.send_message(data), args.timeout)
            entry.update(describe_ack(reply))
            if not reply:
                client.close()
                client = None
        except (OSError, socket.timeout) as e:
            entry.update({"code": None, "control_id": None, "ack": None, "error": repr(e)})
            if client is not None:
                client.close()
            client = None
        if not args.one_connection and client is not None:
            client.close()
            client = None
        results.append(entry)
    if client is not None:
        client.close()
    print(json.dumps(results))


def validate(args):
    with open(args.file, "rb") as f:
        raw = normalise(f.read()).rstrip(CR)
    msh = raw.split(CR, 1)[0].split(raw[3:4])
    charset = msh[17].decode("ascii", "replace").strip() if len(msh) > 17 else ""
    encoding = {"8859/1": "latin-1", "8859/15": "iso-8859-15"}.get(charset, "utf-8")
    text = raw.decode(encoding)
    out = {"file": os.path.basename(args.file), "mode": "message", "errors": []}
    try:
        message = parse_message(text, validation_level=VALIDATION_LEVEL.STRICT, find_groups=True)
        message.validate()
    except Exception as e:
        if "ORM_O01" in str(e) and ("CHOICE" in str(e) or "SUPPGRP" in str(e)):
            out["mode"] = "segments"
            version = msh[11].decode("ascii").split("^")[0] if len(msh) > 11 else "2.5"
            for line in text.split("\r"):
                try:
                    segment = parse_segment(line, version=version,
                                            validation_level=VALIDATION_LEVEL.STRICT)
                    segment.validate()
                except Exception as e2:
                    out["errors"].append("%s: %s: %s" % (line[:3], type(e2).__name__, e2))
        else:
            out["errors"].append("%s: %s" % (type(e).__name__, e))
    out["valid"] = not out["errors"]
    print(json.dumps(out))
    sys.exit(0 if out["valid"] else 1)


def listen(args):
    os.makedirs(args.out, exist_ok=True)
    lock = threading.Lock()
    counter = [0]

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            buffer = b""
            self.request.settimeout(args.max_seconds)
            while True:
                try:
                    data = self.request.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while EB in buffer:
                    frame, buffer = buffer.split(EB, 1)
                    buffer = buffer.lstrip(CR)
                    start = frame.find(SB)
                    if start < 0:
                        continue
                    message = frame[start + 1:]
                    with lock:
                        counter[0] += 1
                        name = os.path.join(args.out, "%04d.hl7" % counter[0])
                    with open(name + ".tmp", "wb") as f:
                        f.write(message)
                    os.rename(name + ".tmp", name)
                    text = message.decode("latin-1")
                    ack = hl7.parse(text).create_ack("AR" if args.nak else "AA")
                    self.request.sendall(SB + str(ack).encode("latin-1") + EB + CR)

    class Server(socketserver.ThreadingTCPServer):
        allow_reuse_address = True
        daemon_threads = True

    server = Server((args.host, args.port), Handler)
    print(json.dumps({"listening": server.server_address[1]}), flush=True)
    threading.Timer(args.max_seconds, server.shutdown).start()
    server.serve_forever()


def ris(args):
    from hl7apy.core import Message as ApyMessage
    from hl7apy.mllp import AbstractErrorHandler, AbstractHandler, MLLPServer

    os.makedirs(args.out, exist_ok=True)
    counter = [0]
    lock = threading.Lock()

    def answer(incoming, code, text=None):
        original = parse_message(incoming.replace("\n", "\r"), find_groups=False)
        ack = ApyMessage("ACK", version=original.msh.msh_12.value or "2.5")
        ack.msh.msh_3 = "RIS"
        ack.msh.msh_5 = original.msh.msh_3.value
        ack.msh.msh_9 = "ACK^" + original.msh.msh_9.msh_9_2.value + "^ACK"
        ack.msh.msh_10 = "ACK" + original.msh.msh_10.value
        ack.msh.msh_11 = original.msh.msh_11.value or "P"
        ack.msa.msa_1 = code
        ack.msa.msa_2 = original.msh.msh_10.value
        if text:
            ack.msa.msa_3 = text
        return "\x0b" + ack.to_er7() + "\x1c\x0d"

    class Completion(AbstractHandler):
        def reply(self):
            with lock:
                counter[0] += 1
                name = os.path.join(args.out, "%04d.hl7" % counter[0])
            with open(name + ".tmp", "w", encoding="utf-8") as f:
                f.write(self.incoming_message)
            os.rename(name + ".tmp", name)
            return answer(self.incoming_message, "AA")

    class Refuse(AbstractErrorHandler):
        def reply(self):
            return answer(self.incoming_message, "AR", type(self.exc).__name__)

    handlers = {"ORM^O01^ORM_O01": (Completion,), "ORM^O01": (Completion,), "ERR": (Refuse,)}
    server = MLLPServer(args.host, args.port, handlers, timeout=args.max_seconds)
    print(json.dumps({"listening": server.server_address[1]}), flush=True)
    threading.Timer(args.max_seconds, server.shutdown).start()
    server.serve_forever()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("send")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--raw", action="store_true")
    s.add_argument("--one-connection", action="store_true")
    s.add_argument("--timeout", type=float, default=10.0)
    s.add_argument("files", nargs="+")
    v = sub.add_parser("validate")
    v.add_argument("file")
    l = sub.add_parser("listen")
    l.add_argument("--host", default="127.0.0.1")
    l.add_argument("--port", type=int, required=True)
    l.add_argument("--out", required=True)
    l.add_argument("--nak", action="store_true")
    l.add_argument("--max-seconds", type=float, default=120.0)
    r = sub.add_parser("ris")
    r.add_argument("--host", default="127.0.0.1")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--out", required=True)
    r.add_argument("--max-seconds", type=float, default=120.0)
    args = parser.parse_args()
    {"send": send, "validate": validate, "listen": listen, "ris": ris}[args.command](args)


if __name__ == "__main__":
    main()
