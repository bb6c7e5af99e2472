//! `openpacs billing --month YYYY-MM`: what each tenant is billed for a month, per exam (by
//! modality, at the configured tariffs) and per GB-month of storage, from the metering events
//! alone (`pacs_store::billing`): the same figures on every run and every node once the month
//! and its grace period are over, whatever was deleted since.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{bail, Context};
use pacs_archive::Platform;
use pacs_store::billing::{Month, MonthUsage};
use pacs_store::TenantRecord;
use serde::{Deserialize, Serialize};

use crate::config::Config;

/// The `[billing]` settings: tariffs and what is not billed.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BillingConfig {
    pub currency: String,
    /// The price of an exam whose modality has none of its own.
    pub exam_price: f64,
    /// Prices per exam by modality (`CT = 2.15`).
    pub exam_prices: BTreeMap<String, f64>,
    /// An exam of several modalities (a PET/CT) is billed under the first of these it has;
    /// then under its first modality in alphabetical order.
    pub modality_precedence: Vec<String>,
    /// The price of one GB (10^9 bytes) kept for a month.
    pub storage_gb_month_price: f64,
    /// An exam deleted within this long after its first store is not billed (wrong patient,
    /// test exam).
    pub grace_hours: f64,
}

impl Default for BillingConfig {
    fn default() -> Self {
        BillingConfig {
            currency: "EUR".into(),
            exam_price: 2.15,
            exam_prices: BTreeMap::new(),
            modality_precedence: ["PT", "NM", "MR", "CT", "XA", "MG", "US", "CR", "DX"]
                .iter()
                .map(|m| m.to_string())
                .collect(),
            storage_gb_month_price: 0.0,
            grace_hours: 24.0,
        }
    }
}

/// One line of a bill.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct Line {
    tenant: String,
    item: String,
    quantity: f64,
    unit_price: f64,
    /// Cents.
    amount_cents: i64,
}

fn cents(value: f64) -> i64 {
    (value * 100.0).round() as i64
}

impl BillingConfig {
    /// The modality an exam is billed under.
    fn billed_modality(&self, modalities: &[String]) -> String {
        self.modality_precedence
            .iter()
            .find(|m| modalities.contains(m))
            .or_else(|| modalities.first())
            .cloned()
            .unwrap_or_else(|| "OT".into())
    }

    /// A tenant's lines: exams by modality, objects and bytes stored (not priced), storage.
    fn lines(&self, tenant: &TenantRecord, month: Month, usage: &MonthUsage) -> Vec<Line> {
        let mut exams: BTreeMap<String, u64> = BTreeMap::new();
        for exam in &usage.exams {
            *exams.entry(self.billed_modality(&exam.modalities)).or_default() += 1;
        }
        let mut lines: Vec<Line> = exams
            .into_iter()
            .map(|(modality, count)| {
                let price = self
                    .exam_prices
                    .get(&modality)
                    .copied()
                    .unwrap_or(self.exam_price);
                Line {
                    tenant: tenant.name.clone(),
                    item: format!("exam {modality}"),
                    quantity: count as f64,
                    unit_price: price,
                    amount_cents: count as i64 * cents(price),
                }
            })
            .collect();
        let gb_months = usage.byte_days as f64 / f64::from(month.days()) / 1e9;
        lines.push(Line {
            tenant: tenant.name.clone(),
            item: "storage GB-month".into(),
            quantity: (gb_months * 1e6).round() / 1e6,
            unit_price: self.storage_gb_month_price,
            amount_cents: cents(gb_months * self.storage_gb_month_price),
        });
        lines
    }
}

fn money(cents: i64) -> String {
    format!(
        "{}{}.{:02}",
        if cents < 0 { "-" } else { "" },
        cents.abs() / 100,
        cents.abs() % 100
    )
}

pub async fn run(
    config: Config,
    month: String,
    tenant: Option<String>,
    format: String,
) -> anyhow::Result<ExitCode> {
    let Some(month) = Month::parse(&month) else {
        bail!("--month {month:?}: YYYY-MM");
    };
    if !matches!(format.as_str(), "table" | "csv" | "json") {
        bail!("unknown format {format:?}: table, csv or json");
    }
    let tariffs = &config.billing;
    let platform = Platform::open(&crate::serve::archive_config(&config)?).await?;
    let tenants: Vec<TenantRecord> = platform
        .records()
        .into_iter()
        .filter(|t| tenant.as_ref().is_none_or(|name| t.name == *name))
        .collect();
    if let (Some(name), true) = (&tenant, tenants.is_empty()) {
        bail!("no tenant {name:?} (see openpacs tenant list)");
    }
    let grace = (tariffs.grace_hours.max(0.0) * 3600.0).round() as u64;
    let mut bills = Vec::new();
    for record in &tenants {
        let usage = platform
            .system()
            .billing_month(pacs_model::TenantId(record.pk), month, grace)
            .await
            .with_context(|| format!("cannot read the metering of {}", record.name))?;
        bills.push((record, usage.clone(), tariffs.lines(record, month, &usage)));
    }
    let currency = &tariffs.currency;
    match format.as_str() {
        "json" => {
            let json: Vec<serde_json::Value> = bills
                .iter()
                .map(|(record, usage, lines)| {
                    serde_json::json!({
                        "tenant": record.name,
                        "month": month.to_string(),
                        "currency": currency,
                        "lines": lines,
                        "examsNotBilled": usage.exams_not_billed,
                        "objectsStored": usage.objects_stored,
                        "bytesStored": usage.bytes_stored,
                        "totalCents": lines.iter().map(|l| l.amount_cents).sum::<i64>(),
                    })
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&json)?);
        }
        "csv" => {
            println!("tenant,month,item,quantity,unit_price,amount,currency");
            for (_, _, lines) in &bills {
                for l in lines {
                    println!(
                        "{},{month},{},{},{},{},{currency}",
                        l.tenant,
                        l.item,
                        l.quantity,
                        l.unit_price,
                        money(l.amount_cents)
                    );
                }
            }
        }
        _ => {
            println!("{month}, {currency}");
            println!(
                "{:<16} {:<18} {:>12} {:>10} {:>10}",
                "TENANT", "ITEM", "QUANTITY", "PRICE", "AMOUNT"
            );
            for (record, usage, lines) in &bills {
                for l in lines {
                    println!(
                        "{:<16} {:<18} {:>12} {:>10.2} {:>10}",
                        l.tenant,
                        l.item,
                        l.quantity,
                        l.unit_price,
                        money(l.amount_cents)
                    );
                }
                let total: i64 = lines.iter().map(|l| l.amount_cents).sum();
                println!(
                    "{:<16} {:<18} {:>12} {:>10} {:>10}",
                    record.name,
                    "total",
                    "",
                    "",
                    money(total)
                );
                println!(
                    "{:<16} ({} objects, {} bytes stored; {} exams deleted within the grace period, not billed)",
                    "", usage.objects_stored, usage.bytes_stored, usage.exams_not_billed
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exam_of_several_modalities_is_billed_under_the_first_in_precedence() {
        let tariffs = BillingConfig::default();
        let m =
            |list: &[&str]| tariffs.billed_modality(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(m(&["CT", "PT"]), "PT");
        assert_eq!(m(&["CT", "SR"]), "CT");
        assert_eq!(m(&["OP", "SR"]), "OP");
        assert_eq!(m(&[]), "OT");
        assert_eq!(money(1765), "17.65");
        assert_eq!(money(5), "0.05");
    }
}
