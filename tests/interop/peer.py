#!/usr/bin/env python3
"""Independent DICOM peer used by the openpacs integration tests.

Built on pynetdicom 3.0.x + pydicom 3.0.x.  Every command prints exactly one
JSON object on stdout (logging goes to stderr).  Exit code 0 when the DICOM
exchange took place (whatever the DIMSE statuses), 2 when no association could
be established (then the JSON object is {"error": "..."}), 1 on usage errors.

Commands (common options --host --port --aec --aet may appear before or after
the command name):

  echo
  store FILE... [--associations N] [--ack-log PATH]
  find  --model study|patient --level L [-k KEY=VALUE ...] [--charset CS]
        [--cancel-after N]
  get   --model study|patient --level L -k KEY=VALUE ...
        [--contexts-from-manifest PATH] [--sop-class UID ...] [--cancel-after N]
  move  --dest AE --model study|patient --level L -k KEY=VALUE ... [--listen PORT]
        [--cancel-after N]
  mwl-find [-k KEY=VALUE ...] [--cancel-after N]
  mpps-create [--uid UID] [-k KEY=VALUE ...]
  mpps-set --uid UID [-k KEY=VALUE ...]
  commit --instance CLASS,UID ... [--transaction UID] [--listen-port L]
         [--propose-scp-role] [--release-after-rsp] [--wait S] [--report-status N]
  commit-listen --listen-port L [--wait S] [--count N] [--report-status N]

In mwl-find, mpps-create and mpps-set, KEY may be a path into sequences:
`ScheduledProcedureStepSequence.Modality=CT` puts Modality in the (single) item of the
Scheduled Procedure Step Sequence; `KEY=` with a sequence KEY gives an empty sequence.

`commit` sends a Storage Commitment Push Model N-ACTION (Request Storage Commitment) and
waits up to --wait seconds for the N-EVENT-REPORT, on the requesting association (a handler
is bound to it) or, with --listen-port, on a new association to a Storage Commitment SCU
acceptor listening there (which accepts the SCP role the sender proposes).
--release-after-rsp releases the requesting association as soon as the N-ACTION-RSP arrived.
It prints the N-ACTION-RSP status and every report received: where it arrived ("same" or
"new"), the Event Type ID, the calling AE title and the event information.

`store` sends each file byte-for-byte: the path is given to
Association.send_c_store() with pynetdicom's _config.STORE_SEND_CHUNKED_DATASET
enabled, so pynetdicom streams file[offset_after_file_meta:] without decoding or
re-encoding it (and requires an accepted context with exactly the file's
transfer syntax).  `get` and `move --listen` record, per SOP Instance UID, the
SHA-256 and size of the exact dataset bytes received and the transfer syntax of
the presentation context they arrived on.

`--cancel-after N` (find, get, move) sends a C-CANCEL for the request's
Message ID once N pending responses have been received (for `get`: pending
C-GET responses, not C-STORE sub-operations), then keeps reading until the
final response.  N=0 sends the C-CANCEL right after the request, before any
response is read (pynetdicom sends the C-FIND/C-GET/C-MOVE request when
send_c_*() is called and returns a lazy generator, so this is possible for all
three).  `get` and `move` always report "cancelled": whether a C-CANCEL was
sent; `find` reports "cancel_sent" when --cancel-after is given.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import socket
import sys
import threading
import time
import warnings
from collections import OrderedDict

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword, keyword_for_tag
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.uid import generate_uid
from pydicom.valuerep import PersonName

from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    AllStoragePresentationContexts,
    _config,
    build_context,
    build_role,
    evt,
)
from pynetdicom import transport as _transport
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

LOG = logging.getLogger("peer")

# Send files raw (no decode / re-encode); receive datasets into memory (BytesIO)
_config.STORE_SEND_CHUNKED_DATASET = True
_config.STORE_RECV_CHUNKED_DATASET = False
# Accept any storage SOP class (incl. private ones) when acting as storage SCP
_config.UNRESTRICTED_STORAGE_SERVICE = True
_config.LOG_RESPONSE_IDENTIFIERS = False
_config.LOG_REQUEST_IDENTIFIERS = False

IMPLICIT_LE = "1.2.840.10008.1.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"
EXPLICIT_BE = "1.2.840.10008.1.2.2"
DEFLATED_LE = "1.2.840.10008.1.2.1.99"

# Default storage SOP classes for `get` (CT, MR, CR, Secondary Capture)
DEFAULT_GET_SOP_CLASSES = [
    "1.2.840.10008.5.1.4.1.1.2",
    "1.2.840.10008.5.1.4.1.1.4",
    "1.2.840.10008.5.1.4.1.1.1",
    "1.2.840.10008.5.1.4.1.1.7",
]
DEFAULT_GET_SYNTAXES = [
    EXPLICIT_LE,
    IMPLICIT_LE,
    EXPLICIT_BE,
    DEFLATED_LE,
    "1.2.840.10008.1.2.4.50",  # JPEG baseline
    "1.2.840.10008.1.2.4.51",  # JPEG extended
    "1.2.840.10008.1.2.4.57",  # JPEG lossless
    "1.2.840.10008.1.2.4.70",  # JPEG lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE lossless
]

MODELS = {
    "study": {
        "find": StudyRootQueryRetrieveInformationModelFind,
        "get": StudyRootQueryRetrieveInformationModelGet,
        "move": StudyRootQueryRetrieveInformationModelMove,
    },
    "patient": {
        "find": PatientRootQueryRetrieveInformationModelFind,
        "get": PatientRootQueryRetrieveInformationModelGet,
        "move": PatientRootQueryRetrieveInformationModelMove,
    },
}

MAX_CONTEXTS = 128


class AssociationFailed(Exception):
    pass


class UsageError(Exception):
    pass


# --------------------------------------------------------------------------
# TCP_NODELAY (pynetdicom has no option for it: wrap its socket factories)
# --------------------------------------------------------------------------
def _set_nodelay(sock):
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except Exception:  # pragma: no cover - best effort
        pass


def _install_nodelay():
    orig_create = _transport.AssociationSocket._create_socket

    def _create_socket(self, address):
        sock = orig_create(self, address)
        _set_nodelay(sock)
        return sock

    _transport.AssociationSocket._create_socket = _create_socket

    orig_get_request = _transport.AssociationServer.get_request

    def get_request(self):
        client, addr = orig_get_request(self)
        _set_nodelay(client)
        return client, addr

    _transport.AssociationServer.get_request = get_request


try:
    _install_nodelay()
except Exception:  # pragma: no cover
    pass


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def emit(obj, code=0):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()
    return code


def status_int(status_ds):
    """Status from a pynetdicom status Dataset, None if there was no response."""
    if status_ds is None or "Status" not in status_ds:
        return None
    return int(status_ds.Status)


def make_ae(args):
    ae = AE(ae_title=args.aet)
    ae.acse_timeout = args.timeout
    ae.dimse_timeout = args.timeout
    ae.network_timeout = args.timeout
    ae.maximum_pdu_size = args.max_pdu
    return ae


def associate(ae, args, contexts, ext_neg=None, handlers=None):
    """Request an association; raise AssociationFailed with a reason."""
    seen = {}

    def on_acse_recv(event):
        seen["primitive"] = event.primitive

    def on_conn_open(event):
        seen["connected"] = True

    handlers = list(handlers or []) + [
        (evt.EVT_ACSE_RECV, on_acse_recv),
        (evt.EVT_CONN_OPEN, on_conn_open),
    ]
    assoc = ae.associate(
        args.host,
        args.port,
        contexts=contexts,
        ae_title=args.aec,
        ext_neg=ext_neg,
        evt_handlers=handlers,
    )
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        p = seen.get("primitive")
        reason = ""
        if p is not None and getattr(p, "result", None) in (1, 2):
            try:
                reason = f": {p.result_str}, source {p.source_str}, reason {p.reason_str}"
            except Exception:
                reason = f": result {p.result} source {p.result_source} diag {p.diagnostic}"
        raise AssociationFailed(f"association rejected{reason}")
    if not seen.get("connected"):
        raise AssociationFailed(
            f"cannot connect to {args.host}:{args.port} (connection refused or timeout)"
        )
    if assoc.is_aborted:
        raise AssociationFailed(
            "association aborted (e.g. no presentation context accepted, or peer abort)"
        )
    raise AssociationFailed(
        f"association with {args.aec}@{args.host}:{args.port} failed "
        "(connection refused, timeout or invalid response)"
    )


def parse_key(key):
    """KEY may be a keyword or a tag as GGGGEEEE / (GGGG,EEEE)."""
    k = key.strip()
    hexpart = k.strip("()").replace(",", "")
    if len(hexpart) == 8 and all(c in "0123456789abcdefABCDEF" for c in hexpart):
        return Tag(int(hexpart, 16))
    tag = tag_for_keyword(k)
    if tag is None:
        raise ValueError(f"unknown DICOM keyword {key!r}")
    return Tag(tag)


def _convert_value(vr, value):
    if value == "":
        if vr == "SQ":
            return []
        return None
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        parts = [int(v, 0) for v in value.split("\\")]
        return parts[0] if len(parts) == 1 else parts
    if vr in ("FL", "FD"):
        parts = [float(v) for v in value.split("\\")]
        return parts[0] if len(parts) == 1 else parts
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return bytes.fromhex(value)
    if vr == "SQ":
        raise ValueError("sequence keys only support an empty value")
    return value  # pydicom splits "a\\b" into a multi-value for string VRs


def build_identifier(level, keys, charset=None):
    try:
        return _build_identifier(level, keys, charset)
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"bad identifier key: {exc}") from exc


def _build_identifier(level, keys, charset=None):
    ds = Dataset()
    if charset:
        cs = charset.split("\\")
        ds.SpecificCharacterSet = cs[0] if len(cs) == 1 else cs
    ds.QueryRetrieveLevel = level
    for item in keys or []:
        if "=" not in item:
            raise UsageError(f"-k expects KEY=VALUE (VALUE may be empty), got {item!r}")
        key, value = item.split("=", 1)
        tag = parse_key(key)
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN" if value == "" else "LO"
        vr = vr.split(" or ")[0]
        ds.add_new(tag, vr, _convert_value(vr, value))
    return ds


def build_dataset(keys, charset=None):
    """A data set from KEY=VALUE items, KEY being a keyword, a tag or a dotted path into
    sequences (each sequence holding one item)."""
    ds = Dataset()
    if charset:
        cs = charset.split("\\")
        ds.SpecificCharacterSet = cs[0] if len(cs) == 1 else cs
    try:
        for item in keys or []:
            if "=" not in item:
                raise UsageError(f"-k expects KEY=VALUE (VALUE may be empty), got {item!r}")
            key, value = item.split("=", 1)
            path = key.split(".")
            target = ds
            for part in path[:-1]:
                tag = parse_key(part)
                if tag not in target or target[tag].VR != "SQ":
                    target.add_new(tag, "SQ", [Dataset()])
                elif len(target[tag].value) == 0:
                    target[tag].value.append(Dataset())
                target = target[tag].value[0]
            tag = parse_key(path[-1])
            try:
                vr = dictionary_VR(tag)
            except KeyError:
                vr = "UN" if value == "" else "LO"
            vr = vr.split(" or ")[0]
            target.add_new(tag, vr, _convert_value(vr, value))
    except UsageError:
        raise
    except Exception as exc:
        raise UsageError(f"bad key: {exc}") from exc
    return ds


def elem_value(elem):
    """JSON-friendly representation of a data element's value."""
    if elem.VR == "SQ":
        return [dataset_to_dict(item) for item in elem.value]
    value = elem.value
    if value is None:
        return ""
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).hex()
    if isinstance(value, (MultiValue, list, tuple)):
        return "\\".join(_scalar_str(v) for v in value)
    return _scalar_str(value)


def _scalar_str(v):
    if v is None:
        return ""
    if isinstance(v, PersonName):
        return str(v)
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).hex()
    return str(v)


def dataset_to_dict(ds):
    out = OrderedDict()
    for elem in ds:
        name = elem.keyword or keyword_for_tag(elem.tag) or f"{elem.tag.group:04X}{elem.tag.element:04X}"
        try:
            out[name] = elem_value(elem)
        except Exception as exc:  # undecodable value: report it, keep going
            out[name] = f"<error: {exc}>"
    return out


def charsets_of(ds, acc):
    if ds is None or "SpecificCharacterSet" not in ds:
        return
    v = ds.SpecificCharacterSet
    vals = list(v) if isinstance(v, (MultiValue, list, tuple)) else [v]
    for c in vals:
        c = "" if c is None else str(c)
        if c not in acc:
            acc.append(c)


class InstanceRecorder:
    """EVT_C_STORE handler recording raw received dataset bytes."""

    def __init__(self):
        self.lock = threading.Lock()
        self.instances = OrderedDict()
        self.received = 0

    def handle(self, event):
        try:
            data = event.request.DataSet.getvalue()
            uid = str(event.request.AffectedSOPInstanceUID)
            rec = {
                "sha256": hashlib.sha256(data).hexdigest(),
                "size": len(data),
                "transfer_syntax": str(event.context.transfer_syntax),
                "sop_class_uid": str(event.request.AffectedSOPClassUID),
            }
            with self.lock:
                self.received += 1
                self.instances[uid] = rec
        except Exception:
            LOG.exception("error while recording a received instance")
            return 0xC211
        return 0x0000


# --------------------------------------------------------------------------
# echo
# --------------------------------------------------------------------------
def cmd_echo(args):
    ae = make_ae(args)
    assoc = associate(ae, args, [build_context(Verification)])
    try:
        rsp = assoc.send_c_echo()
        return emit({"status": status_int(rsp)})
    finally:
        _release(assoc)


def _release(assoc):
    try:
        if assoc.is_established:
            assoc.release()
    except Exception:
        pass


# --------------------------------------------------------------------------
# store
# --------------------------------------------------------------------------
def _read_meta(path):
    """(sop_class, sop_instance, transfer_syntax) from the File Meta group."""
    meta = pydicom.filereader.read_file_meta_info(path)
    missing = [
        kw
        for kw in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID", "TransferSyntaxUID")
        if not meta.get(kw)
    ]
    if missing:
        raise ValueError("file meta lacks " + ", ".join(missing))
    return (
        str(meta.MediaStorageSOPClassUID),
        str(meta.MediaStorageSOPInstanceUID),
        str(meta.TransferSyntaxUID),
    )


def _is_ack(status):
    return status is not None and (
        status == 0x0000 or status == 0x0001 or 0xB000 <= status <= 0xBFFF
    )


class AckLog:
    def __init__(self, path):
        self.lock = threading.Lock()
        self.fh = open(path, "a", encoding="ascii") if path else None

    def ack(self, uid):
        if self.fh is None:
            return
        with self.lock:
            self.fh.write(uid + "\n")
            self.fh.flush()
            os.fsync(self.fh.fileno())

    def close(self):
        if self.fh is not None:
            self.fh.close()


def _batches(items, limit=MAX_CONTEXTS):
    """Split items (each with .pair) in order so that every batch needs at most
    `limit` distinct (sop_class, transfer_syntax) contexts."""
    batches, cur, pairs = [], [], set()
    for it in items:
        if it["pair"] not in pairs and len(pairs) >= limit:
            batches.append(cur)
            cur, pairs = [], set()
        pairs.add(it["pair"])
        cur.append(it)
    if cur:
        batches.append(cur)
    return batches


def _store_worker(args, items, acklog, outcome):
    for batch in _batches(items):
        pairs = list(OrderedDict.fromkeys(it["pair"] for it in batch))
        contexts = [build_context(sop, [ts]) for sop, ts in pairs]
        ae = make_ae(args)
        try:
            assoc = associate(ae, args, contexts)
        except AssociationFailed as exc:
            outcome["assoc_errors"].append(str(exc))
            for it in batch:
                it["result"]["error_comment"] = str(exc)
            continue
        outcome["established"] += 1
        msg_id = 0
        dead = None  # reason the association can no longer be used
        try:
            for it in batch:
                res = it["result"]
                if dead is None and not _assoc_usable(assoc):
                    dead = "association aborted by peer or connection closed"
                if dead is not None:
                    res["error_comment"] = f"not sent: {dead}"
                    continue
                msg_id = msg_id % 65535 + 1
                try:
                    rsp = assoc.send_c_store(it["path"], msg_id=msg_id)
                except Exception as exc:
                    msg = str(exc)
                    if "presentation context" in msg.lower():
                        msg = f"no accepted presentation context for {it['pair'][0]} / {it['pair'][1]}: {msg}"
                    elif not _assoc_usable(assoc):
                        dead = "association aborted by peer or connection closed"
                        msg = f"not sent: {dead}"
                    res["error_comment"] = msg
                    continue
                st = status_int(rsp)
                res["status"] = st
                if st is None:
                    res["error_comment"] = "no response (timeout, connection closed or association aborted)"
                    # pynetdicom signals a closed connection once only: never
                    # wait on this association again
                    dead = "association lost while waiting for an earlier response"
                    try:
                        assoc.abort()
                    except Exception:
                        pass
                    continue
                if "ErrorComment" in rsp:
                    res["error_comment"] = str(rsp.ErrorComment)
                if _is_ack(st):
                    acklog.ack(res["sop_instance_uid"])
        finally:
            _release(assoc)


def _assoc_usable(assoc):
    try:
        return (
            assoc.is_established
            and not assoc.is_aborted
            and not assoc.acse.is_aborted()
            and assoc.dul.is_alive()
        )
    except Exception:
        return False


def cmd_store(args):
    results, items = [], []
    for path in args.files:
        res = {"file": path, "sop_instance_uid": None, "status": None, "error_comment": None}
        results.append(res)
        try:
            sop, inst, ts = _read_meta(path)
        except Exception as exc:
            res["error_comment"] = f"cannot read as DICOM Part 10 file: {type(exc).__name__}: {exc}"
            continue
        res["sop_instance_uid"] = inst
        items.append({"path": path, "pair": (sop, ts), "result": res})

    n = max(1, int(args.associations))
    groups = [items[i::n] for i in range(n)]
    groups = [g for g in groups if g]
    acklog = AckLog(args.ack_log)
    outcome = {"established": 0, "assoc_errors": []}
    t0 = time.monotonic()
    try:
        threads = [
            threading.Thread(target=_store_worker, args=(args, g, acklog, outcome), daemon=True)
            for g in groups
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        acklog.close()
    elapsed = time.monotonic() - t0

    if groups and outcome["established"] == 0:
        return emit({"error": "; ".join(sorted(set(outcome["assoc_errors"])))}, 2)
    out = {"results": results, "elapsed_s": round(elapsed, 6)}
    if outcome["assoc_errors"]:
        out["association_errors"] = outcome["assoc_errors"]
    return emit(out)


# --------------------------------------------------------------------------
# find
# --------------------------------------------------------------------------
def cmd_find(args):
    model = MODELS[args.model]["find"]
    ds = build_identifier(args.level, args.key, args.charset)
    ae = make_ae(args)
    assoc = associate(ae, args, [build_context(model, [EXPLICIT_LE, IMPLICIT_LE])])
    out = {"status": None, "pending": 0, "matches": [], "specific_character_set": []}
    msg_id = 1
    cancel_sent = False
    try:
        try:
            responses = assoc.send_c_find(ds, model, msg_id=msg_id)
        except ValueError as exc:
            return emit({"error": f"C-FIND not possible: {exc}"}, 2)
        if args.cancel_after is not None and args.cancel_after <= 0:
            assoc.send_c_cancel(msg_id, query_model=model)
            cancel_sent = True
        for status, identifier in responses:
            st = status_int(status)
            if st is None:
                out["error"] = "no final response (timeout or association aborted)"
                break
            if st in (0xFF00, 0xFF01):
                out["pending"] += 1
                if identifier is not None:
                    out["matches"].append(dataset_to_dict(identifier))
                    charsets_of(identifier, out["specific_character_set"])
                if (
                    args.cancel_after is not None
                    and not cancel_sent
                    and out["pending"] >= args.cancel_after
                ):
                    assoc.send_c_cancel(msg_id, query_model=model)
                    cancel_sent = True
                continue
            out["status"] = st
            if "ErrorComment" in status:
                out["error_comment"] = str(status.ErrorComment)
            if identifier is not None:
                charsets_of(identifier, out["specific_character_set"])
            break
        if args.cancel_after is not None:
            out["cancel_sent"] = cancel_sent
        return emit(out)
    finally:
        _release(assoc)


# --------------------------------------------------------------------------
# get / move
# --------------------------------------------------------------------------
def plan_storage_contexts(wanted, budget):
    """wanted: OrderedDict sop_class -> ordered list of transfer syntaxes.

    Returns a list of (sop_class, [ts, ...]) contexts, at most `budget` of
    them.  pynetdicom (like any acceptor) agrees on ONE transfer syntax per
    context, so the ideal is one context per (SOP class, transfer syntax),
    which lets the sender use the exact syntax an instance is stored in.  When
    that does not fit, every SOP class keeps at least one context holding its
    remaining syntaxes, and single-syntax contexts are handed out in order
    (earlier SOP classes and earlier syntaxes first)."""
    items = [(sop, list(tss)) for sop, tss in wanted.items() if tss]
    if len(items) > budget:
        LOG.warning(
            "storage contexts: %d SOP classes, only the first %d proposed",
            len(items), budget,
        )
        items = items[:budget]
    spare = budget - len(items)
    plan = []
    for sop, tss in items:
        k = min(len(tss) - 1, spare)
        spare -= k
        plan += [(sop, [ts]) for ts in tss[:k]]
        plan.append((sop, tss[k:]))
        if len(tss[k:]) > 1:
            LOG.info("storage context for %s groups syntaxes %s", sop, tss[k:])
    return plan


def _wanted_syntaxes(args):
    wanted = OrderedDict()

    def add(sop, ts):
        lst = wanted.setdefault(sop, [])
        if ts not in lst:
            lst.append(ts)

    if args.contexts_from_manifest:
        with open(args.contexts_from_manifest, encoding="utf-8") as fh:
            manifest = json.load(fh)
        entries = manifest if isinstance(manifest, list) else manifest.get("files", [])
        for e in entries:
            if e.get("valid") and e.get("sop_class_uid") and e.get("transfer_syntax_uid"):
                add(e["sop_class_uid"], e["transfer_syntax_uid"])
        for sop in args.sop_class or []:
            add(sop, EXPLICIT_LE)
        for sop in list(wanted):
            add(sop, EXPLICIT_LE)
            add(sop, IMPLICIT_LE)
    else:
        for sop in DEFAULT_GET_SOP_CLASSES + list(args.sop_class or []):
            for ts in DEFAULT_GET_SYNTAXES:
                add(sop, ts)
    return wanted


def _run_retrieve(assoc, responses, cancel_after=None, cancel=None):
    """Read C-GET/C-MOVE responses up to the final one.

    With `cancel_after` N (and a `cancel` callable sending the C-CANCEL), the
    C-CANCEL is sent once N pending responses were received (N <= 0: before
    reading any response).  C-STORE sub-operations of a C-GET are handled
    inside pynetdicom's generator and are not counted here."""
    def maybe_cancel(pending):
        if (
            cancel is None
            or cancel_after is None
            or out["cancelled"]
            or "cancel_error" in out
            or pending < cancel_after
        ):
            return
        try:
            cancel()
        except Exception as exc:  # e.g. association already aborted
            out["cancel_error"] = f"C-CANCEL not sent: {type(exc).__name__}: {exc}"
            return
        out["cancelled"] = True

    out = {
        "status": None,
        "completed": None,
        "failed": None,
        "warning": None,
        "remaining": None,
        "pending_responses": 0,
        "cancelled": False,
    }
    maybe_cancel(0)
    _read_retrieve_responses(responses, out, maybe_cancel)
    return out


def _read_retrieve_responses(responses, out, maybe_cancel):
    for status, identifier in responses:
        st = status_int(status)
        if st is None:
            out["error"] = "no final response (timeout or association aborted)"
            break
        if st in (0xFF00, 0xFF01):
            out["pending_responses"] += 1
            maybe_cancel(out["pending_responses"])
            continue
        out["status"] = st
        for key, kw in (
            ("completed", "NumberOfCompletedSuboperations"),
            ("failed", "NumberOfFailedSuboperations"),
            ("warning", "NumberOfWarningSuboperations"),
            ("remaining", "NumberOfRemainingSuboperations"),
        ):
            v = status.get(kw)
            out[key] = int(v) if v is not None and v != "" else None
        if "ErrorComment" in status:
            out["error_comment"] = str(status.ErrorComment)
        if identifier is not None:
            fl = identifier.get("FailedSOPInstanceUIDList")
            if fl:
                out["failed_sop_instance_uids"] = (
                    [str(x) for x in fl] if isinstance(fl, (MultiValue, list)) else [str(fl)]
                )
        break


def cmd_get(args):
    model = MODELS[args.model]["get"]
    ds = build_identifier(args.level, args.key, args.charset)
    plan = plan_storage_contexts(_wanted_syntaxes(args), MAX_CONTEXTS - 1)
    contexts = [build_context(model, [EXPLICIT_LE, IMPLICIT_LE])]
    contexts += [build_context(sop, tss) for sop, tss in plan]
    sops = list(OrderedDict.fromkeys(sop for sop, _ in plan))
    roles = [build_role(sop, scp_role=True) for sop in sops]
    recorder = InstanceRecorder()
    ae = make_ae(args)
    assoc = associate(
        ae, args, contexts, ext_neg=roles, handlers=[(evt.EVT_C_STORE, recorder.handle)]
    )
    msg_id = 1
    try:
        try:
            responses = assoc.send_c_get(ds, model, msg_id=msg_id)
        except ValueError as exc:
            return emit({"error": f"C-GET not possible: {exc}"}, 2)
        out = _run_retrieve(
            assoc,
            responses,
            args.cancel_after,
            lambda: assoc.send_c_cancel(msg_id, query_model=model),
        )
        with recorder.lock:
            out["instances"] = dict(recorder.instances)
            out["received"] = recorder.received
        return emit(out)
    finally:
        _release(assoc)


def cmd_move(args):
    model = MODELS[args.model]["move"]
    ds = build_identifier(args.level, args.key, args.charset)
    recorder = None
    server = None
    if args.listen is not None:
        recorder = InstanceRecorder()
        scp_ae = make_ae(args)
        for cx in AllStoragePresentationContexts:
            scp_ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        scp_ae.add_supported_context(Verification)
        try:
            server = scp_ae.start_server(
                (args.listen_addr, int(args.listen)),
                block=False,
                evt_handlers=[(evt.EVT_C_STORE, recorder.handle)],
            )
        except OSError as exc:
            return emit({"error": f"cannot listen on port {args.listen}: {exc}"}, 2)
    try:
        ae = make_ae(args)
        assoc = associate(ae, args, [build_context(model, [EXPLICIT_LE, IMPLICIT_LE])])
        msg_id = 1
        try:
            try:
                responses = assoc.send_c_move(ds, args.dest, model, msg_id=msg_id)
            except ValueError as exc:
                return emit({"error": f"C-MOVE not possible: {exc}"}, 2)
            out = _run_retrieve(
                assoc,
                responses,
                args.cancel_after,
                lambda: assoc.send_c_cancel(msg_id, query_model=model),
            )
        finally:
            _release(assoc)
        if recorder is not None:
            # let storage associations that are still being released finish
            deadline = time.monotonic() + args.linger
            while time.monotonic() < deadline and server is not None and server.active_associations:
                time.sleep(0.05)
            with recorder.lock:
                out["instances"] = dict(recorder.instances)
                out["received"] = recorder.received
        return emit(out)
    finally:
        if server is not None:
            server.shutdown()


# --------------------------------------------------------------------------
# modality workflow: worklist, MPPS, storage commitment
# --------------------------------------------------------------------------
def cmd_mwl_find(args):
    model = ModalityWorklistInformationFind
    ds = build_dataset(args.key, args.charset)
    ae = make_ae(args)
    assoc = associate(ae, args, [build_context(model, [EXPLICIT_LE, IMPLICIT_LE])])
    out = {"status": None, "pending": 0, "matches": []}
    msg_id = 1
    cancel_sent = False
    try:
        try:
            responses = assoc.send_c_find(ds, model, msg_id=msg_id)
        except ValueError as exc:
            return emit({"error": f"C-FIND not possible: {exc}"}, 2)
        if args.cancel_after is not None and args.cancel_after <= 0:
            assoc.send_c_cancel(msg_id, query_model=model)
            cancel_sent = True
        for status, identifier in responses:
            st = status_int(status)
            if st is None:
                out["error"] = "no final response (timeout or association aborted)"
                break
            if st in (0xFF00, 0xFF01):
                out["pending"] += 1
                if identifier is not None:
                    out["matches"].append(dataset_to_dict(identifier))
                if (
                    args.cancel_after is not None
                    and not cancel_sent
                    and out["pending"] >= args.cancel_after
                ):
                    assoc.send_c_cancel(msg_id, query_model=model)
                    cancel_sent = True
                continue
            out["status"] = st
            if "ErrorComment" in status:
                out["error_comment"] = str(status.ErrorComment)
            break
        if args.cancel_after is not None:
            out["cancel_sent"] = cancel_sent
        return emit(out)
    finally:
        _release(assoc)


def _n_result(status, dataset):
    out = {"status": status_int(status)}
    if status is not None:
        for kw, key in (
            ("ErrorComment", "error_comment"),
            ("AffectedSOPInstanceUID", "affected_sop_instance_uid"),
            ("ErrorID", "error_id"),
        ):
            if kw in status and status[kw].value not in (None, ""):
                v = status[kw].value
                out[key] = int(v) if isinstance(v, int) else str(v)
        if "OffendingElement" in status and status.OffendingElement is not None:
            v = status.OffendingElement
            vals = list(v) if isinstance(v, (MultiValue, list)) else [v]
            out["offending_element"] = [f"{int(t):08X}" for t in vals]
        if "AttributeIdentifierList" in status and status.AttributeIdentifierList is not None:
            v = status.AttributeIdentifierList
            vals = list(v) if isinstance(v, (MultiValue, list)) else [v]
            out["attribute_identifier_list"] = [f"{int(t):08X}" for t in vals]
    out["dataset"] = dataset_to_dict(dataset) if dataset is not None else None
    return out


def cmd_mpps(args):
    ds = build_dataset(args.key, args.charset)
    ae = make_ae(args)
    # pynetdicom keeps the response's Affected SOP Instance UID out of the status it returns:
    # read it from the received command set.
    seen = {}

    def on_dimse_recv(event):
        cs = getattr(event.message, "command_set", None)
        if cs is not None and "AffectedSOPInstanceUID" in cs and cs.AffectedSOPInstanceUID:
            seen["uid"] = str(cs.AffectedSOPInstanceUID)

    assoc = associate(
        ae,
        args,
        [build_context(ModalityPerformedProcedureStep, [EXPLICIT_LE, IMPLICIT_LE])],
        handlers=[(evt.EVT_DIMSE_RECV, on_dimse_recv)],
    )
    try:
        if args.command == "mpps-create":
            status, attrs = assoc.send_n_create(
                ds, ModalityPerformedProcedureStep, args.uid or None
            )
        else:
            status, attrs = assoc.send_n_set(ds, ModalityPerformedProcedureStep, args.uid)
        out = _n_result(status, attrs)
        if "uid" in seen:
            out["affected_sop_instance_uid"] = seen["uid"]
        if out["status"] is None:
            out["error"] = "no response (timeout or association aborted)"
        return emit(out)
    finally:
        _release(assoc)


class ReportRecorder:
    """EVT_N_EVENT_REPORT handler recording storage commitment reports."""

    def __init__(self, status):
        self.status = status
        self.lock = threading.Lock()
        self.reports = []
        self.arrived = threading.Event()

    def handler(self, where):
        def handle(event):
            try:
                info = event.event_information
                rec = {
                    "received_on": where,
                    "event_type_id": event.event_type,
                    "affected_sop_class_uid": str(event.request.AffectedSOPClassUID),
                    "affected_sop_instance_uid": str(event.request.AffectedSOPInstanceUID),
                    "calling_ae": str(event.assoc.requestor.ae_title).strip(),
                    "transfer_syntax": str(event.context.transfer_syntax),
                    "event_information": dataset_to_dict(info),
                }
            except Exception as exc:
                LOG.exception("cannot decode an N-EVENT-REPORT")
                rec = {"received_on": where, "error": f"{type(exc).__name__}: {exc}"}
            with self.lock:
                self.reports.append(rec)
            self.arrived.set()
            return self.status, None

        return handle


def _report_listener(args, recorder):
    """A Storage Commitment SCU acceptor on --listen-addr:--listen-port recording the reports
    sent to it on new associations; None when the port cannot be had."""
    scp_ae = make_ae(args)
    scp_ae.add_supported_context(
        StorageCommitmentPushModel, [EXPLICIT_LE, IMPLICIT_LE], scu_role=True, scp_role=True
    )
    try:
        return scp_ae.start_server(
            (args.listen_addr, int(args.listen_port)),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, recorder.handler("new"))],
        )
    except OSError:
        LOG.exception("cannot listen on port %s", args.listen_port)
        return None


def cmd_commit(args):
    try:
        instances = []
        for item in args.instance:
            sop_class, sop_instance = item.split(",", 1)
            instances.append((sop_class.strip(), sop_instance.strip()))
    except ValueError:
        raise UsageError("--instance expects CLASS,UID")
    ds = Dataset()
    ds.TransactionUID = args.transaction or generate_uid()
    refs = []
    for sop_class, sop_instance in instances:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        refs.append(item)
    ds.ReferencedSOPSequence = refs

    recorder = ReportRecorder(args.report_status)
    server = None
    if args.listen_port is not None:
        server = _report_listener(args, recorder)
        if server is None:
            return emit({"error": f"cannot listen on port {args.listen_port}"}, 2)
    try:
        ae = make_ae(args)
        roles = None
        if args.propose_scp_role:
            roles = [build_role(StorageCommitmentPushModel, scu_role=True, scp_role=True)]
        assoc = associate(
            ae,
            args,
            [build_context(StorageCommitmentPushModel, [EXPLICIT_LE, IMPLICIT_LE])],
            ext_neg=roles,
            handlers=[(evt.EVT_N_EVENT_REPORT, recorder.handler("same"))],
        )
        out = {"transaction_uid": str(ds.TransactionUID)}
        try:
            status, reply = assoc.send_n_action(
                ds, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1"
            )
            res = _n_result(status, reply)
            out["action_status"] = res["status"]
            if "error_comment" in res:
                out["action_error_comment"] = res["error_comment"]
            if args.release_after_rsp:
                _release(assoc)
            deadline = time.monotonic() + args.wait
            if out["action_status"] == 0:
                while time.monotonic() < deadline and not recorder.arrived.is_set():
                    recorder.arrived.wait(0.05)
            # a report sent twice (same association unanswered, then a new one) shows here
            time.sleep(args.linger)
        finally:
            _release(assoc)
        with recorder.lock:
            out["reports"] = list(recorder.reports)
        return emit(out)
    finally:
        if server is not None:
            server.shutdown()


def cmd_commit_listen(args):
    """Only the requester's report listener: accepts N-EVENT-REPORTs on --listen-port for
    --wait seconds (or until --count reports arrived) and prints them."""
    recorder = ReportRecorder(args.report_status)
    server = _report_listener(args, recorder)
    if server is None:
        return emit({"error": f"cannot listen on port {args.listen_port}"}, 2)
    try:
        deadline = time.monotonic() + args.wait
        while time.monotonic() < deadline:
            with recorder.lock:
                if len(recorder.reports) >= args.count:
                    break
            time.sleep(0.05)
        time.sleep(args.linger)
    finally:
        server.shutdown()
    with recorder.lock:
        return emit({"reports": list(recorder.reports)})


# --------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------
def build_parser():
    def common(p, suppress):
        d = (lambda v: argparse.SUPPRESS) if suppress else (lambda v: v)
        p.add_argument("--host", default=d("127.0.0.1"))
        p.add_argument("--port", type=int, default=d(11112))
        p.add_argument("--aec", default=d("OPENPACS"), help="called AE title")
        p.add_argument("--aet", default=d("PEERPY"), help="calling (our) AE title")
        p.add_argument("--timeout", type=float, default=d(60.0), help="ACSE/DIMSE/network timeout (s)")
        p.add_argument("--max-pdu", type=int, default=d(16382), help="our maximum PDU length (0 = unlimited)")
        p.add_argument("-v", "--verbose", action="count", default=d(0))

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    common(parser, False)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("echo")
    common(p, True)

    p = sub.add_parser("store")
    common(p, True)
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--associations", type=int, default=1)
    p.add_argument("--ack-log", default=None)

    def qr(p):
        common(p, True)
        p.add_argument("--model", choices=sorted(MODELS), default="study")
        p.add_argument(
            "--level", required=True, type=str.upper,
            choices=["PATIENT", "STUDY", "SERIES", "IMAGE"],
        )
        p.add_argument("-k", "--key", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--charset", default=None, help='SpecificCharacterSet, e.g. "ISO_IR 192"')

    p = sub.add_parser("find")
    qr(p)
    p.add_argument("--cancel-after", type=int, default=None)

    p = sub.add_parser("get")
    qr(p)
    p.add_argument("--contexts-from-manifest", default=None, metavar="PATH")
    p.add_argument("--sop-class", action="append", default=[], metavar="UID")
    p.add_argument("--cancel-after", type=int, default=None, metavar="N",
                   help="send C-CANCEL after N pending C-GET responses (0: right after the request)")

    p = sub.add_parser("move")
    qr(p)
    p.add_argument("--dest", required=True, help="move destination AE title")
    p.add_argument("--listen", type=int, default=None, metavar="PORT",
                   help="run a storage SCP (AE --aet) on PORT during the move")
    p.add_argument("--listen-addr", default="0.0.0.0")
    p.add_argument("--linger", type=float, default=2.0,
                   help="max seconds to wait for incoming storage associations to close")
    p.add_argument("--cancel-after", type=int, default=None, metavar="N",
                   help="send C-CANCEL after N pending C-MOVE responses (0: right after the request)")

    def workflow_keys(p):
        common(p, True)
        p.add_argument("-k", "--key", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--charset", default=None, help='SpecificCharacterSet, e.g. "ISO_IR 192"')

    p = sub.add_parser("mwl-find")
    workflow_keys(p)
    p.add_argument("--cancel-after", type=int, default=None)

    p = sub.add_parser("mpps-create")
    workflow_keys(p)
    p.add_argument("--uid", default=None, help="Affected SOP Instance UID (default: let the SCP choose)")

    p = sub.add_parser("mpps-set")
    workflow_keys(p)
    p.add_argument("--uid", required=True, help="Requested SOP Instance UID")

    p = sub.add_parser("commit")
    common(p, True)
    p.add_argument("--instance", action="append", required=True, metavar="CLASS,UID")
    p.add_argument("--transaction", default=None, help="Transaction UID (default: a new one)")
    p.add_argument("--listen-port", type=int, default=None, metavar="L",
                   help="accept reports on a new association on port L")
    p.add_argument("--listen-addr", default="127.0.0.1")
    p.add_argument("--propose-scp-role", action="store_true",
                   help="propose SCU and SCP roles for Storage Commitment on the request")
    p.add_argument("--release-after-rsp", action="store_true",
                   help="release the requesting association as soon as the N-ACTION-RSP arrived")
    p.add_argument("--wait", type=float, default=20.0, help="seconds to wait for a report")
    p.add_argument("--linger", type=float, default=0.3,
                   help="seconds to keep listening after the first report")
    p.add_argument("--report-status", type=lambda v: int(v, 0), default=0,
                   help="status to answer the N-EVENT-REPORT with")

    p = sub.add_parser("commit-listen")
    common(p, True)
    p.add_argument("--listen-port", type=int, required=True, metavar="L")
    p.add_argument("--listen-addr", default="127.0.0.1")
    p.add_argument("--wait", type=float, default=20.0, help="seconds to wait for reports")
    p.add_argument("--count", type=int, default=1, help="reports to wait for")
    p.add_argument("--linger", type=float, default=0.3,
                   help="seconds to keep listening after the last awaited report")
    p.add_argument("--report-status", type=lambda v: int(v, 0), default=0,
                   help="status to answer the N-EVENT-REPORT with")
    return parser


def main(argv=None):
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(levelname).1s %(name)s: %(message)s")
    logging.getLogger("pynetdicom").setLevel(max(level, logging.INFO) if args.verbose < 2 else logging.DEBUG)
    if args.verbose == 0:
        logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    # pydicom reports charset problems both through logging and warnings:
    # keep the logging copy only
    warnings.filterwarnings("ignore", category=UserWarning, module=r"pydicom\.")
    handler = {
        "echo": cmd_echo,
        "store": cmd_store,
        "find": cmd_find,
        "get": cmd_get,
        "move": cmd_move,
        "mwl-find": cmd_mwl_find,
        "mpps-create": cmd_mpps,
        "mpps-set": cmd_mpps,
        "commit": cmd_commit,
        "commit-listen": cmd_commit_listen,
    }[args.command]
    try:
        return handler(args)
    except AssociationFailed as exc:
        return emit({"error": str(exc)}, 2)
    except UsageError as exc:  # bad -k etc.
        return emit({"error": f"usage: {exc}"}, 1)


if __name__ == "__main__":
    sys.exit(main())
