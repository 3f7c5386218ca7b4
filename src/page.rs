//! The status page at `/` on the metrics address: one server-rendered HTML page, no scripts, no
//! external assets, readable on a phone. Feeds (datasets) with their files and records in the
//! last hour and day, the last quarantined files with their reasons, files waiting and why, and
//! the daemon's state. It is built from the same data as `ferry status` (`cmd::status::gather`)
//! and the ledger, read afresh for every request; it changes nothing.

use crate::cmd::status::gather;
use crate::config::Config;
use crate::health::{self, State};
use crate::report::Status;
use crate::store::{self, FileFilter, FileRow, FileState};
use anyhow::Result;
use chrono::{Duration, SecondsFormat, Utc};
use std::collections::BTreeMap;
use std::fmt::Write;

/// Quarantined files the page lists, newest first.
const RECENT_QUARANTINED: u64 = 20;
/// Waiting files the page lists (the rest are counted).
const WAITING_SHOWN: usize = 50;

/// What the page shows besides `ferry status`.
struct Page {
    status: Status,
    daemon: State,
    /// Per dataset: (files, records) finished in the last hour and the last day.
    hour: BTreeMap<String, (u64, u64)>,
    day: BTreeMap<String, (u64, u64)>,
    quarantined: Vec<FileRow>,
    generated_at: String,
}

/// The page: the HTTP status and the HTML. A store that cannot be read is a 503 page that says
/// why.
pub fn render(cfg: &Config) -> (&'static str, String) {
    match collect(cfg) {
        Ok(p) => ("200 OK", html(cfg, &p)),
        Err(e) => (
            "503 Service Unavailable",
            shell(
                cfg,
                &format!(
                    "<section id=\"error\"><h2>Unavailable</h2><p class=\"bad\">{}</p></section>",
                    esc(&format!("{e:#}"))
                ),
            ),
        ),
    }
}

fn collect(cfg: &Config) -> Result<Page> {
    let mut store = store::open_existing(&cfg.store)?;
    let status = gather(cfg, store.as_deref_mut())?;
    let now = Utc::now();
    let ago = |d: Duration| (now - d).to_rfc3339_opts(SecondsFormat::Millis, true);
    let (mut hour, mut day, mut quarantined) = (BTreeMap::new(), BTreeMap::new(), Vec::new());
    if let Some(s) = store.as_deref_mut() {
        hour = s.activity_since(&ago(Duration::hours(1)))?;
        day = s.activity_since(&ago(Duration::days(1)))?;
        quarantined = s.files(&FileFilter {
            state: Some(FileState::Quarantined),
            latest: true,
            open: true,
            limit: Some(RECENT_QUARANTINED),
            ..FileFilter::default()
        })?;
        quarantined.reverse();
    }
    Ok(Page {
        status,
        daemon: health::get(),
        hour,
        day,
        quarantined,
        generated_at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
    })
}

/// Readable from a phone (420 px) to a wide screen: on a narrow screen each table row becomes
/// a block of `label: value` lines, so nothing scrolls sideways; paths break at their `/`.
const STYLE: &str = "body{font:15px/1.4 system-ui,sans-serif;margin:0 auto;max-width:60em;\
padding:.5em 1em;color:#222}h1{font-size:1.4em;margin:.3em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}\
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:.25em .5em;\
border-bottom:1px solid #ddd;vertical-align:top;overflow-wrap:anywhere}td.n,th.n{text-align:right;\
white-space:nowrap}dl{display:grid;grid-template-columns:max-content 1fr;gap:.2em 1em;margin:0}\
dt{color:#666}dd{margin:0;overflow-wrap:anywhere;min-width:0}.state{display:inline-block;\
padding:.1em .6em;border-radius:1em;font-weight:600}.ok{background:#d9f2dc;color:#14571f}\
.bad{background:#fbe0de;color:#8a1c12}.warn{background:#fff1cc;color:#6b4e00}.muted{color:#777}\
code{overflow-wrap:anywhere;word-break:break-word}footer{margin:2em 0 1em;color:#777;font-size:.9em}\
@media (max-width:40em){table,thead,tbody,tr,th,td{display:block}thead{position:absolute;\
left:-9999px}tr{border-bottom:1px solid #ddd;padding:.4em 0}td,td.n{border:0;padding:.05em 0;\
text-align:left;white-space:normal}td[data-label]::before{content:attr(data-label) \": \";\
color:#666}}";

/// A path as HTML that may break after each `/`.
fn path_html(p: &str) -> String {
    esc(p).replace('/', "/<wbr>")
}

fn shell(cfg: &Config, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <meta http-equiv=\"refresh\" content=\"30\"><title>ferry — {}</title>\
         <style>{STYLE}</style></head><body>\n<h1>ferry</h1>\n{body}\n<footer>\
         <a href=\"/metrics\">metrics</a> · <a href=\"/healthz\">healthz</a> · \
         <a href=\"/readyz\">readyz</a> · refreshes every 30 s</footer></body></html>\n",
        esc(&cfg.spool.root.display().to_string())
    )
}

fn html(cfg: &Config, p: &Page) -> String {
    let mut b = String::new();
    daemon(&mut b, cfg, p);
    feeds(&mut b, p);
    sources(&mut b, &p.status);
    quarantine(&mut b, p);
    waiting(&mut b, &p.status);
    shell(cfg, &b)
}

fn daemon(b: &mut String, cfg: &Config, p: &Page) {
    let (class, word, detail) = match &p.daemon {
        State::Starting => ("warn", "starting", String::new()),
        State::Running => ("ok", "running", String::new()),
        State::Stopping => (
            "warn",
            "stopping",
            "finishing the files in flight".to_string(),
        ),
        State::BackingOff { reason, .. } => ("bad", "backing off", reason.clone()),
    };
    let st = &p.status;
    let _ = writeln!(
        b,
        "<section id=\"daemon\"><h2>Daemon</h2><p><span class=\"state {class}\" \
         data-state=\"{word}\">{word}</span> {}</p><dl>\
         <dt>spool</dt><dd><code>{}</code></dd><dt>store</dt><dd><code>{}</code></dd>\
         <dt>last activity</dt><dd>{}</dd><dt>as of</dt><dd>{}</dd></dl></section>",
        esc(&detail),
        path_html(&st.root),
        esc(&cfg.store.describe()),
        esc(st.last_activity.as_deref().unwrap_or("never")),
        esc(&p.generated_at),
    );
}

fn feeds(b: &mut String, p: &Page) {
    let _ = write!(
        b,
        "<section id=\"feeds\"><h2>Feeds</h2><table><thead><tr>\
         <th>dataset</th><th class=\"n\">files 1 h</th><th class=\"n\">records 1 h</th>\
         <th class=\"n\">files 24 h</th><th class=\"n\">records 24 h</th>\
         <th class=\"n\">files</th><th class=\"n\">records</th>\
         <th class=\"n\">quarantined</th></tr></thead><tbody>"
    );
    if p.status.datasets.is_empty() {
        b.push_str("<tr><td colspan=\"8\" class=\"muted\">no files yet</td></tr>");
    }
    for d in &p.status.datasets {
        let (fh, rh) = p.hour.get(&d.name).copied().unwrap_or_default();
        let (fd, rd) = p.day.get(&d.name).copied().unwrap_or_default();
        let _ = write!(
            b,
            "<tr data-dataset=\"{}\"><td><strong>{}</strong></td>",
            esc(&d.name),
            esc(&d.name)
        );
        for (col, label, n) in [
            ("files_hour", "files 1 h", fh),
            ("records_hour", "records 1 h", rh),
            ("files_day", "files 24 h", fd),
            ("records_day", "records 24 h", rd),
            ("files", "files", d.files),
            ("records", "records", d.records),
            ("quarantined", "quarantined", d.quarantined),
        ] {
            let _ = write!(
                b,
                "<td class=\"n\" data-col=\"{col}\" data-label=\"{label}\">{}</td>",
                crate::report::thousands(n)
            );
        }
        b.push_str("</tr>");
    }
    b.push_str("</tbody></table></section>\n");
}

fn quarantine(b: &mut String, p: &Page) {
    let open = p.status.quarantine.open;
    let _ = write!(
        b,
        "<section id=\"quarantine\"><h2>Quarantine <span class=\"state {}\">{open} open</span></h2>",
        if open > 0 { "bad" } else { "ok" }
    );
    if p.quarantined.is_empty() {
        b.push_str("<p class=\"muted\">nothing in quarantine</p></section>\n");
        return;
    }
    if open > p.quarantined.len() as u64 {
        let _ = write!(
            b,
            "<p class=\"muted\">the last {} (all: <code>ferry quarantine list</code>)</p>",
            p.quarantined.len()
        );
    }
    b.push_str(
        "<table><thead><tr><th class=\"n\">id</th><th>file</th>\
         <th>dataset</th><th>reason</th><th>when</th></tr></thead><tbody>",
    );
    for f in &p.quarantined {
        let _ = write!(
            b,
            "<tr data-id=\"{}\"><td class=\"n\" data-label=\"id\">{}</td>\
             <td data-label=\"file\"><code>{}</code></td><td data-label=\"dataset\">{}</td>\
             <td data-label=\"reason\"><code data-col=\"kind\">{}</code> {}</td>\
             <td data-label=\"when\">{}</td></tr>",
            f.id,
            f.id,
            path_html(&f.path),
            esc(f.dataset.as_deref().unwrap_or("-")),
            esc(f.error_kind.as_deref().unwrap_or("-")),
            esc(f.error_message.as_deref().unwrap_or("")),
            esc(&f.finished_at)
        );
    }
    b.push_str("</tbody></table></section>\n");
}

/// Remote sources: how each one's last poll went, and its files by state.
fn sources(b: &mut String, st: &Status) {
    if st.sources.is_empty() {
        return;
    }
    b.push_str(
        "<section id=\"sources\"><h2>Sources</h2><table><thead><tr><th>source</th>\
         <th>state</th><th>last listing</th><th class=\"n\">fetched</th>\
         <th class=\"n\">loaded, still listed</th><th class=\"n\">awaiting disposal</th><th>last error</th>\
         </tr></thead><tbody>",
    );
    for src in &st.sources {
        let (class, state) = match src.live.as_ref().map(|l| l.state.as_str()) {
            Some("ok") => ("ok", "ok"),
            Some(other) => ("bad", other),
            None => ("warn", "not polled yet"),
        };
        let live = src.live.as_ref();
        let error = live
            .and_then(|l| l.last_error.clone())
            .or_else(|| src.last_disposal_error.clone())
            .unwrap_or_default();
        let _ = write!(
            b,
            "<tr><td data-label=\"source\">{} <span class=\"muted\">{}</span></td>\
             <td data-label=\"state\"><span class=\"state {class}\">{}</span></td>\
             <td data-label=\"last listing\">{}</td><td class=\"n\" data-label=\"fetched\">{}</td>\
             <td class=\"n\" data-label=\"loaded, still listed\">{}</td>\
             <td class=\"n\" data-label=\"awaiting disposal\">{}</td>\
             <td data-label=\"last error\">{}</td></tr>",
            esc(&src.name),
            esc(&src.url),
            esc(state),
            esc(live
                .and_then(|l| l.last_listing.as_deref())
                .unwrap_or("never")),
            live.map_or(0, |l| l.fetched),
            src.finished + src.awaiting_disposal,
            src.awaiting_disposal,
            esc(&error)
        );
    }
    b.push_str("</tbody></table></section>\n");
}

fn waiting(b: &mut String, st: &Status) {
    let _ = write!(
        b,
        "<section id=\"waiting\"><h2>Waiting</h2><p>{} ready, {} in processing, {} waiting</p>",
        st.ready,
        st.processing,
        st.waiting.len()
    );
    if !st.waiting.is_empty() {
        b.push_str("<table><thead><tr><th>file</th><th>rule</th><th>why</th></tr></thead><tbody>");
        for w in st.waiting.iter().take(WAITING_SHOWN) {
            let _ = write!(
                b,
                "<tr><td data-label=\"file\"><code>{}</code></td>\
                 <td data-col=\"rule\" data-label=\"rule\">{}</td>\
                 <td data-label=\"why\">{}</td></tr>",
                path_html(&w.path),
                esc(w.rule),
                esc(&w.reason)
            );
        }
        b.push_str("</tbody></table>");
        if st.waiting.len() > WAITING_SHOWN {
            let _ = write!(
                b,
                "<p class=\"muted\" id=\"waiting-more\">and {} more (all: <code>ferry status</code>)</p>",
                st.waiting.len() - WAITING_SHOWN
            );
        }
    }
    b.push_str("</section>\n");
}

/// Text as HTML: the five characters that could end an element or an attribute, escaped.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
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

#[cfg(test)]
mod tests {
    use super::esc;

    #[test]
    fn file_names_cannot_open_markup() {
        assert_eq!(
            esc("<script>\"x\"&'y'</script>"),
            "&lt;script&gt;&quot;x&quot;&amp;&#39;y&#39;&lt;/script&gt;"
        );
    }
}
