//! Collects the figures of a run: printed as they come, and written after every section to
//! `<out>/report.md` (Markdown tables, pasted into BENCHMARKS.md) and `<out>/results.json`, so an
//! interrupted run keeps what it measured.

use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::driver::LoadSummary;
use crate::procfs::Machine;

#[derive(Debug)]
struct Section {
    title: String,
    markdown: String,
    json: Value,
}

/// The report of one `credbroker-bench` invocation.
#[derive(Debug)]
pub struct Report {
    out_dir: PathBuf,
    machine: Machine,
    command: String,
    sections: Vec<Section>,
}

impl Report {
    pub fn new(out_dir: &Path, command: String) -> anyhow::Result<Report> {
        std::fs::create_dir_all(out_dir)?;
        let report = Report {
            out_dir: out_dir.to_path_buf(),
            machine: Machine::current(),
            command,
            sections: Vec::new(),
        };
        println!("{}", report.header());
        Ok(report)
    }

    fn header(&self) -> String {
        let m = &self.machine;
        format!(
            "# credbroker-bench\n\n`{}`\n\nMachine: {} — {} CPUs, {:.1} GiB RAM, Linux {}; load average at start {}.\n",
            self.command, m.cpu_model, m.cpus, m.memory_gib, m.kernel, m.loadavg_at_start
        )
    }

    /// Adds a section, prints it and rewrites the output files.
    pub fn add(&mut self, title: &str, markdown: String, json: Value) -> anyhow::Result<()> {
        println!("\n## {title}\n\n{markdown}");
        self.sections.push(Section {
            title: title.to_string(),
            markdown,
            json,
        });
        self.write()
    }

    fn write(&self) -> anyhow::Result<()> {
        let mut md = self.header();
        for s in &self.sections {
            md.push_str(&format!("\n## {}\n\n{}\n", s.title, s.markdown));
        }
        std::fs::write(self.out_dir.join("report.md"), md)?;
        let sections: serde_json::Map<String, Value> = self
            .sections
            .iter()
            .map(|s| (s.title.clone(), s.json.clone()))
            .collect();
        let all = json!({
            "command": self.command,
            "machine": self.machine,
            "sections": sections,
        });
        std::fs::write(
            self.out_dir.join("results.json"),
            serde_json::to_string_pretty(&all)?,
        )?;
        Ok(())
    }
}

/// Microseconds as a readable latency.
pub fn us(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} ms", v / 1000.0)
    } else if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

/// Requests per second, thousands separated.
pub fn rate(v: f64) -> String {
    let n = v.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One row of a latency table: `| label | c | rps | p50 | p99 | p99.9 | extra… |`.
pub fn load_row(label: &str, s: &LoadSummary, extra: &[String]) -> String {
    let mut row = format!(
        "| {label} | {} | {} | {} | {} | {} |",
        s.concurrency,
        rate(s.throughput),
        us(s.p50_us),
        us(s.p99_us),
        us(s.p999_us)
    );
    for e in extra {
        row.push_str(&format!(" {e} |"));
    }
    row
}

/// "met" / "**missed**".
pub fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(rate(1234567.4), "1,234,567");
        assert_eq!(rate(999.0), "999");
        assert_eq!(us(850.0), "850 µs");
        assert_eq!(us(1500.0), "1.50 ms");
        assert_eq!(us(25_000.0), "25.0 ms");
    }
}
