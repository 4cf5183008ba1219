//! `flotilla translate -f FILE`: translate a multi-document YAML offline and print the input
//! resources with their computed status, or the xDS resources per gateway.

use anyhow::{Context, Result};
use flotilla_model::{parse_documents, EventBody, ResourceEvent};
use flotilla_translate::{TranslateOptions, Translator};
use serde_json::{json, Value};
use std::io::Write;

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Format {
    Yaml,
    Json,
}

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum Output {
    /// The input resources with their computed `status`.
    Status,
    /// The xDS resources of every gateway (decoded to JSON-ish summaries).
    Xds,
    /// The rate limit service's rules (`flotilla ratelimit --config`): give the translator a
    /// rate limit service (`--flags` with `{"rateLimitService": ["HOST:PORT"]}`).
    Ratelimit,
}

pub fn run(
    file: &std::path::Path,
    flags: Option<&std::path::Path>,
    cluster: &str,
    format: Format,
    to: Output,
) -> Result<()> {
    let options = match flags {
        None => TranslateOptions::default(),
        Some(f) => {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading {}", f.display()))?;
            TranslateOptions::from_json(&text)
                .with_context(|| format!("parsing translator flags {}", f.display()))?
        }
    };
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let (resources, errors) = parse_documents(&file.display().to_string(), &text, cluster);
    for e in &errors {
        eprintln!("error: {e}");
    }
    let mut t = Translator::with_options(options);
    let mut order = Vec::new();
    for r in resources {
        order.push(r.key.clone());
        let ev = ResourceEvent {
            cluster: cluster.to_string(),
            source: "translate".into(),
            body: EventBody::Upsert {
                key: r.key,
                object: r.raw,
                origin: None,
            },
        };
        if let Err(e) = t.apply_owned(ev) {
            eprintln!("error: {e}");
        }
    }
    t.recompute();
    let docs: Vec<Value> = match to {
        // One document, not a list: the rules file as it is.
        Output::Ratelimit => {
            let rules = t.rate_limit_rules();
            let mut out = std::io::stdout().lock();
            match format {
                Format::Json => serde_json::to_writer_pretty(&mut out, &rules)?,
                Format::Yaml => serde_yaml_ng::to_writer(&mut out, &rules)?,
            }
            writeln!(out)?;
            return Ok(());
        }
        Output::Status => order
            .iter()
            .filter_map(|k| {
                let mut obj = t.resource(k)?.raw.clone();
                // The translator's view (no GatewayClass status, no Gateway-level conditions
                // that Envoy Gateway's provider writes), so outputs compare with its tests.
                let status = t.translator_status(k);
                if let (Some(m), Some(st)) = (obj.as_object_mut(), status) {
                    m.insert("status".into(), st.clone());
                }
                Some(obj)
            })
            .collect(),
        Output::Xds => t
            .gateways()
            .values()
            .map(|g| {
                json!({
                    "gateway": g.gateway,
                    "resources": g.resources.iter().map(|r| json!({
                        "typeUrl": r.type_url, "name": r.name, "version": r.version,
                        "bytes": r.body.len(),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect(),
    };
    let mut out = std::io::stdout().lock();
    match format {
        Format::Json => serde_json::to_writer_pretty(&mut out, &docs)?,
        Format::Yaml => {
            for d in docs {
                writeln!(out, "---")?;
                serde_yaml_ng::to_writer(&mut out, &d)?;
            }
        }
    }
    writeln!(out)?;
    Ok(())
}
