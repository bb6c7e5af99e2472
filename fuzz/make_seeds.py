"""Writes fuzz/seeds/<target>/ from the repository's fixtures (run once; the seeds are committed).

DICOM fixtures get their Pixel Data shrunk to a few bytes so that the seeds stay small (the
header is what the targets parse); HL7 samples are used as they are; protocol seeds (PDUs,
A-ASSOCIATE-RQ, command sets, query strings, multipart bodies) are written here byte by byte.
Needs pydicom (the test venv has it): .venv/bin/python3 fuzz/make_seeds.py
"""
import io
import pathlib
import struct

import pydicom
from pydicom.encaps import encapsulate

root = pathlib.Path(__file__).resolve().parent.parent
seeds = root / "fuzz" / "seeds"
TS = [
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
    "1.2.840.10008.1.2.2",
    "1.2.840.10008.1.2.1.99",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2.4.70",
    "1.2.840.10008.1.2.5",
    "1.2.840.10008.1.2.4.90",
]


def put(target, name, data):
    d = seeds / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def shrunk(path):
    ds = pydicom.dcmread(path, force=True)
    if "PixelData" in ds:
        if ds.file_meta.TransferSyntaxUID.is_compressed:
            ds.PixelData = encapsulate([b"\x00\x01\x02\x03"])
            ds["PixelData"].is_undefined_length = True
        else:
            ds.PixelData = b"\x00\x01\x02\x03"
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=False)
    return out.getvalue(), str(ds.file_meta.TransferSyntaxUID)


parts = []
for path in sorted((root / "tests/fixtures/valid").glob("*.dcm")) + sorted(
    (root / "tests/fixtures/malformed").glob("*.dcm")
):
    try:
        data, ts = shrunk(path)
    except Exception as e:  # malformed fixtures that pydicom cannot rewrite: as they are
        data, ts = path.read_bytes(), None
    if len(data) > 64 * 1024:
        continue
    put("part10_header", path.stem, data)
    parts.append(data)
    if ts in TS and data[128:132] == b"DICM":
        group_len = struct.unpack("<I", data[140:144])[0]
        dataset = data[144 + group_len :]
        for target in ("dataset_check", "dicom_json"):
            put(target, path.stem, bytes([TS.index(ts)]) + dataset)

boundary = b"fuzzboundary"
body = b""
for p in parts[:2]:
    body += b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n" + p + b"\r\n"
body += b"--" + boundary + b"--\r\n"
ct = b'multipart/related; type="application/dicom"; boundary=' + boundary
put("stow_multipart", "two_parts", b"\x10" + ct + b"\n" + body)
put("stow_multipart", "not_dicom_part", b"\x01" + ct + b"\n--" + boundary
    + b"\r\nContent-Type: text/plain\r\n\r\nhello\r\n--" + boundary + b"--\r\n")

for path in sorted((root / "tests/hl7").glob("*/*")):
    if path.suffix not in (".hl7", ".bin") or path.stat().st_size > 64 * 1024:
        continue
    data = path.read_bytes()
    put("hl7_message", path.stem, data)
    put("mllp_framing", path.stem, b"\x07\x0b" + data + b"\x1c\r" + b"\x0b" + data[:40])


def element(el, value):
    return struct.pack("<HHI", 0, el, len(value)) + value


def command(fields):
    body = b"".join(element(el, v) for el, v in fields)
    return element(0x0000, struct.pack("<I", len(body))) + body


def ui(text):
    b = text.encode()
    return b + b"\0" if len(b) % 2 else b


us = lambda v: struct.pack("<H", v)
echo = command([(0x0002, ui("1.2.840.10008.1.1")), (0x0100, us(0x0030)), (0x0110, us(1)), (0x0800, us(0x0101))])
store = command([(0x0002, ui("1.2.840.10008.5.1.4.1.1.2")), (0x0100, us(0x0001)), (0x0110, us(2)),
                 (0x0700, us(0)), (0x0800, us(0)), (0x1000, ui("1.2.3.4.5"))])
find = command([(0x0002, ui("1.2.840.10008.5.1.4.1.2.2.1")), (0x0100, us(0x0020)), (0x0110, us(3)),
                (0x0700, us(0)), (0x0800, us(0))])
move = command([(0x0002, ui("1.2.840.10008.5.1.4.1.2.2.2")), (0x0100, us(0x0021)), (0x0110, us(4)),
                (0x0600, b"DEST_AE "), (0x0700, us(0)), (0x0800, us(0))])
for name, c in [("c_echo_rq", echo), ("c_store_rq", store), ("c_find_rq", find), ("c_move_rq", move)]:
    put("dimse_command", name, c)


def pdv(ctx, control, data):
    return struct.pack(">I", len(data) + 2) + bytes([ctx, control]) + data


def pdu(kind, body):
    return bytes([kind, 0]) + struct.pack(">I", len(body)) + body


identifier = bytes([0x08, 0, 0x52, 0, ord("C"), ord("S"), 6, 0]) + b"STUDY " \
    + bytes([0x10, 0, 0x10, 0, ord("P"), ord("N"), 4, 0]) + b"DOE*"
put("pdu_reader", "echo", pdu(4, pdv(1, 3, echo)) + pdu(5, b"\0" * 4))
put("pdu_reader", "find", pdu(4, pdv(3, 3, find)) + pdu(4, pdv(3, 0, identifier[:8]) + pdv(3, 2, identifier[8:])))
put("pdu_reader", "abort", pdu(7, b"\0\0\2\6"))


def item(kind, body):
    return bytes([kind, 0]) + struct.pack(">H", len(body)) + body


def associate_rq(contexts, roles=b""):
    body = struct.pack(">HH", 1, 0) + b"OPENPACS".ljust(16) + b"FUZZSCU".ljust(16) + b"\0" * 32
    body += item(0x10, b"1.2.840.10008.3.1.1.1")
    for i, (abstract, syntaxes) in enumerate(contexts):
        pc = bytes([2 * i + 1, 0, 0, 0]) + item(0x30, abstract.encode())
        pc += b"".join(item(0x40, t.encode()) for t in syntaxes)
        body += item(0x20, pc)
    user = item(0x51, struct.pack(">I", 16384)) + item(0x52, b"1.2.3.4") + item(0x55, b"FUZZ") + roles
    body += item(0x50, user)
    return pdu(1, body)


put("associate_rq", "echo", associate_rq([("1.2.840.10008.1.1", ["1.2.840.10008.1.2"])]))
put("associate_rq", "store_find", associate_rq([
    ("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.1.99"]),
    ("1.2.840.10008.5.1.4.1.2.2.1", ["1.2.840.10008.1.2"]),
    ("1.2.840.10008.5.1.4.31", ["1.2.840.10008.1.2"]),
]))
role = item(0x54, struct.pack(">H", 25) + b"1.2.840.10008.5.1.4.1.1.2" + b"\1\1")
put("associate_rq", "role_selection", associate_rq([("1.2.840.10008.5.1.4.1.1.2", ["1.2.840.10008.1.2"])], role))

for i, q in enumerate([
    "PatientName=DOE*&limit=10&offset=5",
    "StudyDate=20200101-20201231&ModalitiesInStudy=CT&includefield=all",
    "00100020=ID1&fuzzymatching=true&includefield=PatientBirthDate,00081030",
    "StudyInstanceUID=1.2.3,1.2.4&sort=-StudyDate,PatientName",
    "StudyTime=120000-&AccessionNumber=A?1&PatientSex=F",
    "ReferencedStudySequence=x&limit=abc",
]):
    put("query_params", f"q{i}", q.encode())
