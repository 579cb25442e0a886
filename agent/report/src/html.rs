//! The HTML rendering: one self-contained page, printable, readable without scripts.
//!
//! Layout: the header (box, time, counts), what changed since the previous report, every item
//! at a glance, then one section per safeguard with each item's status, reason, remediation and
//! evidence, then the asset and model inventory, the data-flow map and the boot records.
//! Every value from the report is escaped; the page has no script, no external resource, and a
//! Content-Security-Policy that forbids both, so a hostile value cannot run in a reader's browser.

use std::fmt::Write as _;

use crate::report::{Item, Report, Status};

/// Escape text for HTML element content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn badge(status: Status) -> String {
    let class = match status {
        Status::Pass => "pass",
        Status::Fail => "fail",
        Status::NeedsAttention => "attention",
        Status::Attested => "attested",
        Status::NotApplicable => "na",
    };
    format!("<span class=\"badge {class}\">{}</span>", escape(status.label()))
}

const STYLE: &str = "
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:2em auto;max-width:60em;color:#111;line-height:1.4}
h1{font-size:1.6em;margin-bottom:.2em} h2{border-bottom:2px solid #333;padding-bottom:.2em;margin-top:2em}
h3{margin-bottom:.3em} table{border-collapse:collapse;width:100%;margin:.5em 0}
th,td{border:1px solid #bbb;padding:.25em .5em;text-align:left;vertical-align:top;font-size:.92em}
th{background:#eee} .badge{display:inline-block;padding:0 .5em;border:2px solid;font-weight:bold;white-space:nowrap}
.pass{border-color:#1a7f37;color:#1a7f37} .fail{border-color:#b00020;color:#b00020}
.attention{border-color:#9a6700;color:#9a6700} .attested{border-color:#0550ae;color:#0550ae} .na{border-color:#666;color:#666}
.item{border:1px solid #ccc;padding:.5em 1em;margin:1em 0;page-break-inside:avoid}
.refs{color:#444;font-size:.9em} .remedy{background:#fff4e5;padding:.3em .6em;border-left:4px solid #9a6700}
code{font-family:ui-monospace,monospace;font-size:.9em;word-break:break-all}
@media print{body{margin:0;max-width:none} h2{page-break-before:auto} a{color:inherit;text-decoration:none}}
";

/// Render the report as one HTML page.
pub fn render(report: &Report) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let title = format!("Compliance checklist report: {}", report.box_name);
    // `write!` to a String cannot fail; the results are ignored on purpose.
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">\
         <title>{t}</title><style>{STYLE}</style></head><body>\n<h1>{t}</h1>\n",
        t = escape(&title)
    );
    let s = &report.summary;
    let _ = write!(
        h,
        "<p>Generated <strong>{}</strong> · profile <strong>{}</strong> · report format {}</p>\n\
         <p>{} pass · {} fail · {} needs attention · {} attested · {} not applicable</p>\n",
        escape(&report.generated_at.to_string()),
        escape(&report.profile),
        report.format_version,
        s.pass,
        s.fail,
        s.needs_attention,
        s.attested,
        s.not_applicable
    );
    if report.profile != "appliance" {
        let _ = writeln!(
            h,
            "<p class=\"remedy\"><strong>This box runs the {} profile.</strong> Its protections are simulated \
             where the appliance has devices; this report is not evidence for a clinic.</p>",
            escape(&report.profile)
        );
    }
    h.push_str(
        "<p class=\"refs\">The signed record of this report is the JSON file generated with it \
         (<code>wardbox-report-&lt;time&gt;.json</code>), which lists this page's SHA-256 and carries the box's \
         TPM quote. Check both on any machine with <code>wardbox report verify FILE.json --ak ak.pub \
         --rendering FILE.html</code> (see the verification procedure in the product documentation).</p>\n",
    );

    changes(&mut h, report);
    glance(&mut h, report);
    for section in &report.sections {
        let items: Vec<&Item> = report.items.iter().filter(|i| i.section == section.id).collect();
        if items.is_empty() {
            continue;
        }
        let _ = writeln!(
            h,
            "<h2 id=\"{}\">{} <span class=\"refs\">({})</span></h2>",
            escape(&section.id),
            escape(&section.title),
            escape(&section.reference)
        );
        for item in items {
            item_html(&mut h, item);
        }
    }
    inventory(&mut h, report);
    h.push_str("</body></html>\n");
    h
}

fn changes(h: &mut String, report: &Report) {
    h.push_str("<h2 id=\"changes\">What changed since the previous report</h2>\n");
    let Some(previous) = &report.previous else {
        h.push_str("<p>This is the first report: there is nothing to compare with.</p>\n");
        return;
    };
    let _ = write!(h, "<p>Compared with the report of {}", escape(&previous.generated_at.to_string()));
    if let Some(d) = &previous.digest {
        let _ = write!(h, " (digest <code>{}</code>)", escape(d));
    }
    h.push_str(".</p>\n");
    if report.changes.is_empty() {
        h.push_str("<p>No item changed.</p>\n");
        return;
    }
    h.push_str("<table><tr><th>Item</th><th>Before</th><th>Now</th></tr>\n");
    for c in &report.changes {
        let show = |s: Option<Status>| s.map(badge).unwrap_or_else(|| "(absent)".into());
        let _ = writeln!(
            h,
            "<tr><td><a href=\"#{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            escape(&c.item),
            escape(&c.title),
            show(c.from),
            show(c.to)
        );
    }
    h.push_str("</table>\n");
}

fn glance(h: &mut String, report: &Report) {
    h.push_str("<h2 id=\"glance\">At a glance</h2>\n<table><tr><th>Status</th><th>Item</th><th>Reference</th><th>How</th></tr>\n");
    for item in &report.items {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td><a href=\"#{}\">{}</a></td><td>{}</td><td>{}</td></tr>",
            badge(item.status),
            escape(&item.id),
            escape(&item.title),
            escape(&item.references.join("; ")),
            match item.method {
                crate::report::Method::Measured => "measured live",
                crate::report::Method::Attestation => "attestation",
            }
        );
    }
    h.push_str("</table>\n");
}

fn item_html(h: &mut String, item: &Item) {
    let _ = write!(
        h,
        "<div class=\"item\" id=\"{}\"><h3>{} {}</h3>\n<p class=\"refs\">{} · <code>{}</code></p>\n<p>{}</p>\n",
        escape(&item.id),
        badge(item.status),
        escape(&item.title),
        escape(&item.references.join("; ")),
        escape(&item.id),
        escape(&item.reason)
    );
    if let Some(r) = &item.remediation {
        let _ = writeln!(h, "<p class=\"remedy\"><strong>To do:</strong> {}</p>", escape(r));
    }
    if let Some(w) = &item.waiver {
        let _ = writeln!(
            h,
            "<p><strong>Accepted exception</strong> approved by {} on {}, expires {}: {}</p>",
            escape(&w.approver),
            escape(&w.approved_at.to_string()),
            escape(&w.expires_at.to_string()),
            escape(&w.justification)
        );
    }
    for e in &item.evidence {
        let _ = writeln!(
            h,
            "<table><tr><th colspan=\"2\">Checked: {}<br><span class=\"refs\">How: {} · when: {}</span></th></tr>",
            escape(&e.check),
            escape(&e.how),
            escape(&e.at.to_string())
        );
        for v in &e.values {
            let _ = writeln!(h, "<tr><td>{}</td><td><code>{}</code></td></tr>", escape(&v.name), escape(&v.value));
        }
        h.push_str("</table>\n");
    }
    h.push_str("</div>\n");
}

fn inventory(h: &mut String, report: &Report) {
    let inv = &report.inventory;
    h.push_str("<h2 id=\"inventory\">Asset and model inventory</h2>\n<table>\n");
    let rows = [
        ("Hardware", format!("{} {}", inv.hardware_vendor, inv.hardware_model)),
        ("Serial", inv.serial.clone()),
        ("CPU", inv.cpu.clone()),
        ("Memory (MiB)", inv.memory_mib.to_string()),
        ("Operating system", inv.os.clone()),
        ("Kernel", inv.kernel.clone()),
        ("Image version", inv.image_version.clone()),
        ("Agent version", inv.agent_version.clone()),
        (
            "Secure Boot",
            match inv.secure_boot {
                Some(true) => "enabled".into(),
                Some(false) => "disabled".into(),
                None => "unknown".into(),
            },
        ),
    ];
    for (name, value) in rows {
        let _ = writeln!(h, "<tr><th>{}</th><td>{}</td></tr>", escape(name), escape(&value));
    }
    h.push_str("</table>\n<h3>GPUs</h3>\n<table><tr><th>Name</th><th>Memory (MiB)</th><th>Driver</th><th>Health</th></tr>\n");
    for g in &inv.gpus {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&g.name),
            g.memory_mib,
            escape(&g.driver),
            escape(&g.health)
        );
    }
    h.push_str("</table>\n<h3>Models</h3>\n<table><tr><th>Name</th><th>Role</th><th>File</th><th>Bytes</th><th>SHA-256</th><th>Verified at load</th></tr>\n");
    for m in &inv.models {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}</td></tr>",
            escape(&m.name),
            escape(&m.role),
            escape(&m.file),
            m.bytes,
            escape(&m.sha256),
            if m.digest_verified { "yes" } else { "NO" }
        );
    }
    h.push_str("</table>\n<h2 id=\"data-flows\">Data-flow map</h2>\n<table><tr><th>From</th><th>To</th><th>Channel</th><th>Purpose</th><th>Control (live evidence)</th></tr>\n");
    for d in &report.data_flows {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&d.from),
            escape(&d.to),
            escape(&d.channel),
            escape(&d.purpose),
            escape(&d.control)
        );
    }
    h.push_str("</table>\n<h2 id=\"boot\">Boot stages</h2>\n<table><tr><th>Stage</th><th>Outcome</th><th>Reason</th><th>Missing protections</th></tr>\n");
    for s in &report.boot {
        let _ = writeln!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&s.stage),
            escape(&s.outcome),
            escape(&s.reason),
            escape(&s.missing_protections.join(", "))
        );
    }
    h.push_str("</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{evaluate, sample};

    fn now() -> jiff::Timestamp {
        "2026-11-29T10:00:00Z".parse().expect("time")
    }

    #[test]
    fn escape_covers_markup_and_quotes() {
        assert_eq!(escape(r#"<script>"a"&'b'</script>"#), "&lt;script&gt;&quot;a&quot;&amp;&#39;b&#39;&lt;/script&gt;");
    }

    #[test]
    fn hostile_values_are_escaped_and_the_page_has_no_script() {
        let mut facts = sample::healthy(now());
        facts.box_name = "<script>alert(1)</script>".into();
        if let crate::Probe::Observed { value } = &mut facts.accounts {
            value[0].user_id = "\"><img src=x onerror=alert(1)>".into();
            value[1].user_id = value[0].user_id.clone();
        }
        let page = render(&evaluate(&facts, now()));
        assert!(!page.contains("<script"), "a script tag got through");
        assert!(!page.contains("<img"), "an img tag got through");
        assert!(page.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(page.contains("default-src 'none'"));
    }

    #[test]
    fn one_section_per_safeguard_with_status_then_evidence() {
        let mut facts = sample::healthy(now());
        facts.sessions.idle_timeout_secs = 3600;
        let report = evaluate(&facts, now());
        let page = render(&report);
        for s in &report.sections {
            assert_eq!(page.matches(&format!("<h2 id=\"{}\">", s.id)).count(), 1, "section {}", s.id);
        }
        let item = page.find("id=\"access-automatic-logoff\"><h3>").expect("item");
        let badge = page[item..].find("badge fail").expect("status") + item;
        let evidence = page[item..].find("idle timeout (s)").expect("evidence") + item;
        assert!(badge < evidence, "status comes before evidence");
        assert!(page[item..].contains("To do:"));
    }
}
