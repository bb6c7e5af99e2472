//! DIMSE clients: DCMTK's tools (by absolute path) for transfers, and a small in-process
//! C-FIND requestor for latency, so that a query's time is not a process start-up.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::tags;
use dicom_object::InMemDicomObject;
use dicom_transfer_syntax_registry::entries;
use dicom_ul::association::client::{ClientAssociation, ClientAssociationOptions};
use dicom_ul::pdu::{PDataValue, PDataValueType, Pdu, PresentationContextResultReason};
use pacs_dimse::command::{field, status, Command as DimseCommand, HAS_DATASET, PRIORITY_MEDIUM};

pub const CALLING_AE: &str = "BENCH";
const STUDY_ROOT_FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
const IMPLICIT_VR_LE: &str = "1.2.840.10008.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";

/// Where the DCMTK tools are.
#[derive(Clone, Debug)]
pub struct Dcmtk {
    pub bin_dir: PathBuf,
}

impl Dcmtk {
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin_dir.join(name)
    }

    /// Runs `tool` and fails with its output when it exits non-zero.
    pub fn run(&self, name: &str, args: &[String], nodelay: bool) -> Result<Output> {
        let mut cmd = Command::new(self.tool(name));
        cmd.args(args);
        if nodelay {
            cmd.env("TCP_NODELAY", "1");
        } else {
            cmd.env_remove("TCP_NODELAY");
        }
        let out = cmd
            .output()
            .with_context(|| format!("running {}", self.tool(name).display()))?;
        if !out.status.success() {
            bail!(
                "{name} exited with {}: {}",
                out.status,
                tail(&String::from_utf8_lossy(&out.stderr), 600)
            );
        }
        Ok(out)
    }

    /// Sends `files` with `storescu`, split over `associations` processes run side by side.
    pub fn store(
        &self,
        host: &str,
        port: u16,
        called_ae: &str,
        files: &[PathBuf],
        associations: usize,
        nodelay: bool,
    ) -> Result<()> {
        let chunk = files.len().div_ceil(associations.max(1)).max(1);
        std::thread::scope(|s| {
            let handles: Vec<_> = files
                .chunks(chunk)
                .map(|part| {
                    s.spawn(move || {
                        let mut args = vec![
                            "-nh".to_string(),
                            "-aet".into(),
                            CALLING_AE.into(),
                            "-aec".into(),
                            called_ae.into(),
                            host.into(),
                            port.to_string(),
                        ];
                        args.extend(part.iter().map(|p| p.display().to_string()));
                        self.run("storescu", &args, nodelay)
                    })
                })
                .collect();
            for h in handles {
                h.join()
                    .map_err(|_| anyhow::anyhow!("storescu thread panicked"))??;
            }
            Ok(())
        })
    }

    /// C-GET of one series into `out_dir`, or, without one, with `getscu --ignore` (data
    /// received and discarded, so that the receiver does not limit the rate). Returns the
    /// number of instances received, from `getscu -v`'s log, in the `--ignore` case.
    pub fn get_series(
        &self,
        t: (&str, u16, &str),
        study: &str,
        series: &str,
        out_dir: Option<&Path>,
    ) -> Result<usize> {
        let mut args = vec![
            "-S".to_string(),
            "-aet".into(),
            CALLING_AE.into(),
            "-aec".into(),
            t.2.into(),
        ];
        match out_dir {
            Some(d) => args.extend(["-od".to_string(), d.display().to_string()]),
            None => args.extend(["--ignore".to_string(), "-v".into()]),
        }
        args.extend([
            "-k".into(),
            "QueryRetrieveLevel=SERIES".into(),
            "-k".into(),
            format!("StudyInstanceUID={study}"),
            "-k".into(),
            format!("SeriesInstanceUID={series}"),
            t.0.into(),
            t.1.to_string(),
        ]);
        let out = self.run("getscu", &args, true)?;
        Ok(count_store_requests(&out))
    }

    /// C-MOVE of one series to `destination`. Returns the number of completed sub-operations
    /// from the final C-MOVE response (`movescu -d` prints its fields), after checking that none
    /// failed: the destination itself logs nothing, which would slow it down.
    pub fn move_series(
        &self,
        t: (&str, u16, &str),
        study: &str,
        series: &str,
        destination: &str,
    ) -> Result<usize> {
        let args = vec![
            "-d".to_string(),
            "-S".to_string(),
            "-aet".into(),
            CALLING_AE.into(),
            "-aec".into(),
            t.2.into(),
            "-aem".into(),
            destination.into(),
            "-k".into(),
            "QueryRetrieveLevel=SERIES".into(),
            "-k".into(),
            format!("StudyInstanceUID={study}"),
            "-k".into(),
            format!("SeriesInstanceUID={series}"),
            t.0.into(),
            t.1.to_string(),
        ];
        let out = self.run("movescu", &args, true)?;
        final_move_counts(&String::from_utf8_lossy(&out.stdout))
            .or_else(|| final_move_counts(&String::from_utf8_lossy(&out.stderr)))
            .context("movescu printed no final C-MOVE response with sub-operation counts")
            .and_then(|(completed, failed)| {
                ensure!(failed == 0, "C-MOVE: {failed} sub-operations failed");
                Ok(completed)
            })
    }

    /// First line of `tool --version`.
    pub fn version(&self, name: &str) -> String {
        Command::new(self.tool(name))
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find(|l| !l.trim().is_empty())
                    .map(|l| l.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into())
    }
}

fn tail(s: &str, n: usize) -> String {
    let start = s.len().saturating_sub(n);
    let start = (start..s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    s[start..].trim().to_string()
}

/// One association on which C-FIND requests are sent one after another.
pub struct FindScu {
    assoc: ClientAssociation<TcpStream>,
    context_id: u8,
    /// True when the accepted transfer syntax is explicit VR little endian.
    explicit: bool,
    next_id: u16,
}

impl FindScu {
    pub fn connect(host: &str, port: u16, called_ae: &str) -> Result<FindScu> {
        let mut assoc = ClientAssociationOptions::new()
            .calling_ae_title(CALLING_AE)
            .called_ae_title(called_ae.to_string())
            .with_presentation_context(STUDY_ROOT_FIND, vec![EXPLICIT_VR_LE, IMPLICIT_VR_LE])
            .read_timeout(Duration::from_secs(120))
            .establish((host, port))
            .with_context(|| format!("associating with {called_ae} at {host}:{port}"))?;
        let _ = assoc.inner_stream().set_nodelay(true);
        let pc = assoc
            .presentation_contexts()
            .iter()
            .find(|pc| pc.reason == PresentationContextResultReason::Acceptance)
            .context("Study Root C-FIND not accepted")?;
        let explicit = pc.transfer_syntax.trim_end_matches('\0') == EXPLICIT_VR_LE;
        let context_id = pc.id;
        Ok(FindScu {
            assoc,
            context_id,
            explicit,
            next_id: 1,
        })
    }

    /// Sends one C-FIND and returns the number of matches once the final response arrives.
    pub fn find(&mut self, keys: &[(Tag, VR, &str)]) -> Result<usize> {
        let mut identifier = InMemDicomObject::new_empty();
        for (tag, vr, value) in keys {
            identifier.put(DataElement::new(*tag, *vr, PrimitiveValue::from(*value)));
        }
        let ts = if self.explicit {
            entries::EXPLICIT_VR_LITTLE_ENDIAN
        } else {
            entries::IMPLICIT_VR_LITTLE_ENDIAN
        };
        let mut data = Vec::new();
        identifier
            .write_dataset_with_ts(&mut data, &ts.erased())
            .context("encoding identifier")?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let rq = DimseCommand {
            command_field: field::C_FIND_RQ,
            affected_sop_class_uid: Some(STUDY_ROOT_FIND.into()),
            message_id: Some(id),
            priority: Some(PRIORITY_MEDIUM),
            data_set_type: HAS_DATASET,
            ..DimseCommand::default()
        };
        self.assoc.send(&Pdu::PData {
            data: vec![
                PDataValue {
                    presentation_context_id: self.context_id,
                    value_type: PDataValueType::Command,
                    is_last: true,
                    data: rq.encode(),
                },
                PDataValue {
                    presentation_context_id: self.context_id,
                    value_type: PDataValueType::Data,
                    is_last: true,
                    data,
                },
            ],
        })?;
        let mut matches = 0;
        let mut command = Vec::new();
        loop {
            match self.assoc.receive()? {
                Pdu::PData { data } => {
                    for pdv in data {
                        if pdv.value_type != PDataValueType::Command {
                            continue;
                        }
                        command.extend_from_slice(&pdv.data);
                        if !pdv.is_last {
                            continue;
                        }
                        let rsp = DimseCommand::decode(&command)?;
                        command.clear();
                        match rsp.status {
                            Some(status::PENDING) | Some(0xFF01) => matches += 1,
                            Some(status::SUCCESS) => return Ok(matches),
                            other => bail!(
                                "C-FIND failed with status {other:04X?}: {}",
                                rsp.error_comment.unwrap_or_default()
                            ),
                        }
                    }
                }
                other => bail!("unexpected PDU during C-FIND: {other:?}"),
            }
        }
    }

    pub fn release(self) {
        let _ = self.assoc.release();
    }
}

/// Identifier keys: tag, VR and value (empty for a return key).
pub type FindKeys<'a> = Vec<(Tag, VR, &'a str)>;

/// The tags C-FIND requests ask for at study level.
pub fn study_return_keys() -> FindKeys<'static> {
    vec![
        (tags::QUERY_RETRIEVE_LEVEL, VR::CS, "STUDY"),
        (tags::STUDY_INSTANCE_UID, VR::UI, ""),
        (tags::PATIENT_NAME, VR::PN, ""),
        (tags::PATIENT_ID, VR::LO, ""),
        (tags::STUDY_DATE, VR::DA, ""),
        (tags::MODALITIES_IN_STUDY, VR::CS, ""),
        (tags::NUMBER_OF_STUDY_RELATED_INSTANCES, VR::IS, ""),
    ]
}

/// Incoming C-STORE requests logged by a DCMTK tool run with `-v` ("Received C-STORE
/// Request" for getscu, "Received Store Request" for storescp).
pub fn count_store_requests(out: &std::process::Output) -> usize {
    count_store_request_lines(&String::from_utf8_lossy(&out.stdout))
        + count_store_request_lines(&String::from_utf8_lossy(&out.stderr))
}

/// Completed and failed sub-operations of the final C-MOVE response in a `movescu -d` log
/// (`D: Completed Suboperations       : 1000`), `None` when the final response carried no count.
fn final_move_counts(log: &str) -> Option<(usize, usize)> {
    let (_, last) = log.rsplit_once("Received Final Move Response")?;
    let count = |field: &str| -> Option<usize> {
        last.lines().find_map(|l| {
            l.split_once(field)?
                .1
                .trim()
                .strip_prefix(':')?
                .trim()
                .parse()
                .ok()
        })
    };
    Some((
        count("Completed Suboperations")?,
        count("Failed Suboperations").unwrap_or(0),
    ))
}

fn count_store_request_lines(log: &str) -> usize {
    log.lines()
        .filter(|l| {
            l.starts_with("I: Received") && (l.contains("Store Request") || l.contains("C-STORE Request"))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::final_move_counts;

    /// The shape of `movescu -d`'s log: each pending response has counts too, only the final
    /// one's count.
    const LOG: &str = "I: Received Move Response 2 (Pending)
D: Remaining Suboperations       : 1
D: Completed Suboperations       : 1
D: Failed Suboperations          : 0
I: Received Final Move Response
D: Message Type                  : C-MOVE RSP
D: Remaining Suboperations       : none
D: Completed Suboperations       : 2
D: Failed Suboperations          : 1
D: Warning Suboperations         : 0
I: Releasing Association
";

    #[test]
    fn the_final_move_response_gives_the_counts() {
        assert_eq!(final_move_counts(LOG), Some((2, 1)));
        let no_counts = "I: Received Final Move Response\nI: Releasing Association\n";
        assert_eq!(final_move_counts(no_counts), None);
        assert_eq!(
            final_move_counts("I: Received Move Response 1 (Pending)\nD: Completed Suboperations : 1\n"),
            None
        );
    }
}
