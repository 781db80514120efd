"""`meshctl trace ID --html FILE`: the terminal's waterfall (mesh.ctl.trace's model: order, depth, retry numbering,
languages, errors) as one self-contained HTML page: inline CSS and JS, no network fetches. Bars on a time axis,
services marked by language, errors in red with their status, spans that fold their children, each span's
attributes on expand.

Every string from the trace is escaped here, on the server side: the page's script only toggles classes and never
builds markup from trace data. The script also reads the URL's fragment (`#collapse=all`, `#collapse=SPAN_ID`,
`#expand=SPAN_ID`), so a headless browser's `--dump-dom` can show a folded or expanded page without clicks."""

from __future__ import annotations

import html
from datetime import UTC, datetime

from mesh.ctl.trace import LANGUAGE_MARK, Span, _ms, ordered

__all__ = ["page"]

LANGUAGE_COLOURS = {"py": "#3572a5", "go": "#00add8", "ts": "#b8860b"}
TICKS = 5

STYLE = """
body { font: 13px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.2em; margin: 0 0 .2em; } .summary { color: #555; margin-bottom: 1em; }
table { border-collapse: collapse; width: 100%; table-layout: fixed; }
th, td { padding: 2px 6px; vertical-align: top; } th { text-align: left; border-bottom: 1px solid #ccc; }
col.label { width: 42%; } col.duration { width: 8em; }
tr.span:hover { background: #f4f7fb; } tr.hidden, tr.attrs.hidden { display: none; }
.name { white-space: nowrap; overflow: hidden; text-overflow: ellipsis; cursor: pointer; }
.toggle { width: 1.6em; border: 0; background: none; cursor: pointer; font: inherit; padding: 0; }
.leaf { display: inline-block; width: 1.6em; }
.lang { display: inline-block; color: #fff; border-radius: 3px; padding: 0 4px; font-size: 11px; }
.kind { color: #777; } .retry { color: #a0522d; font-weight: bold; }
.track { position: relative; height: 16px; }
.axis { position: relative; height: 1.2em; color: #777; font-size: 11px; }
.tick { position: absolute; top: 0; white-space: nowrap; transform: translateX(-50%); } .tick.first { transform: none; }
.tick.last { transform: translateX(-100%); }
.bar { position: absolute; top: 3px; height: 10px; min-width: 2px; border-radius: 2px; }
.error .bar { background: #d73a49 !important; } .error .name { color: #b31d28; }
.errmsg { color: #b31d28; font-size: 12px; white-space: normal; }
.duration { text-align: right; font-variant-numeric: tabular-nums; }
tr.attrs td { background: #fafafa; font-family: ui-monospace, monospace; font-size: 12px; }
dl { margin: 0; display: grid; grid-template-columns: max-content 1fr; gap: 0 1em; }
dt { color: #555; } dd { margin: 0; word-break: break-all; }
"""

SCRIPT = """
(function () {
  var rows = Array.prototype.slice.call(document.querySelectorAll('tr.span'));
  var byParent = {};
  rows.forEach(function (r) { (byParent[r.dataset.parent] = byParent[r.dataset.parent] || []).push(r); });
  function descendants(id, out) {
    (byParent[id] || []).forEach(function (r) { out.push(r); descendants(r.dataset.id, out); });
    return out;
  }
  function attrs(r) { return document.getElementById('attrs-' + r.dataset.id); }
  function refresh() {
    rows.forEach(function (r) { r.classList.remove('hidden'); });
    rows.forEach(function (r) {
      if (r.classList.contains('collapsed') && !r.classList.contains('hidden')) {
        descendants(r.dataset.id, []).forEach(function (d) { d.classList.add('hidden'); });
      }
    });
    rows.forEach(function (r) {
      var a = attrs(r);
      if (a) { a.classList.toggle('hidden', r.classList.contains('hidden') || !r.classList.contains('expanded')); }
      var b = r.querySelector('button.toggle');
      if (b) {
        var folded = r.classList.contains('collapsed');
        b.textContent = folded ? '\\u25b8' : '\\u25be';
        b.setAttribute('aria-expanded', folded ? 'false' : 'true');
        b.title = (folded ? 'show ' : 'hide ') + descendants(r.dataset.id, []).length + ' nested span(s)';
      }
    });
  }
  rows.forEach(function (r) {
    var slot = r.querySelector('.fold');
    if ((byParent[r.dataset.id] || []).length) {
      var b = document.createElement('button');
      b.className = 'toggle';
      b.addEventListener('click', function (e) { e.stopPropagation(); r.classList.toggle('collapsed'); refresh(); });
      slot.appendChild(b);
    } else {
      slot.className += ' leaf';
    }
    r.querySelector('.name').addEventListener('click', function () { r.classList.toggle('expanded'); refresh(); });
  });
  location.hash.replace(/^#/, '').split('&').forEach(function (part) {
    var kv = part.split('='), ids = (kv[1] || '').split(',');
    rows.forEach(function (r) {
      var hit = ids.indexOf('all') >= 0 || ids.indexOf(r.dataset.id) >= 0;
      if (kv[0] === 'collapse' && hit && (byParent[r.dataset.id] || []).length) { r.classList.add('collapsed'); }
      if (kv[0] === 'expand' && hit) { r.classList.add('expanded'); }
    });
  });
  refresh();
  document.body.setAttribute('data-ready', 'true');
})();
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _row(depth: int, span: Span, attempt: int, start: int, total: int, parents: set[str]) -> str:
    mark = LANGUAGE_MARK.get(span.language, span.language[:2] or "??")
    colour = LANGUAGE_COLOURS.get(mark, "#888")
    left = (span.start - start) / total * 100
    width = max((span.end - span.start) / total * 100, 0.2)
    parent = span.parent_id if span.parent_id in parents else ""
    retry = f' <span class="retry">#{attempt}</span>' if attempt > 1 else ""
    error = (f'<div class="errmsg" style="padding-left:{depth * 1.2 + 1.6:.1f}em">error: {_e(span.error)}</div>'
             if span.error else "")
    title = f"{span.service} {span.kind} {span.name}"
    attributes = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in sorted(span.attributes.items()))
    attributes = (f"<dt>span id</dt><dd>{_e(span.span_id)}</dd><dt>service</dt><dd>{_e(span.service)}</dd>"
                  f"<dt>language</dt><dd>{_e(span.language or '?')}</dd>{attributes}")
    return (
        f'<tr class="span{" error" if span.error else ""}" data-id="{_e(span.span_id)}" data-parent="{_e(parent)}" '
        f'data-depth="{depth}" data-service="{_e(span.service)}" data-language="{_e(mark)}">'
        f'<td><div class="name" title="{_e(title)}" style="padding-left:{depth * 1.2:.1f}em">'
        f'<span class="fold"></span>{"✗ " if span.error else ""}'
        f'<span class="service">{_e(span.service)}</span> <span class="lang" style="background:{colour}" '
        f'title="{_e(span.language)}">{_e(mark)}</span> <span class="kind">{_e(span.kind)}</span> '
        f'<span class="op">{_e(span.name)}</span>{retry}</div>{error}</td>'
        f'<td><div class="track"><div class="bar" style="left:{left:.3f}%;width:{width:.3f}%;background:{colour}">'
        f'</div></div></td><td class="duration">{_e(_ms(span.end - span.start))}</td></tr>\n'
        f'<tr class="attrs hidden" id="attrs-{_e(span.span_id)}"><td colspan="3"><dl>{attributes}</dl></td></tr>\n')


def page(spans: list[Span], trace_id: str) -> str:
    """The whole page, every trace string escaped; no URL in it."""
    if spans:
        start, end = min(s.start for s in spans), max(s.end for s in spans)
    else:
        start = end = 0
    total = max(end - start, 1)
    ids = {s.span_id for s in spans}
    rows = "".join(_row(depth, s, attempt, start, total, ids) for depth, s, attempt in ordered(spans))
    ticks = "".join(
        f'<span class="tick{" first" if i == 0 else " last" if i == TICKS else ""}" '
        f'style="left:{i * 100 / TICKS:.0f}%">'
        f'{_e(_ms(total * i // TICKS) if i else "0")}</span>' for i in range(TICKS + 1))
    services = sorted({f"{s.service}[{LANGUAGE_MARK.get(s.language, s.language)}]" for s in spans})
    errors = sum(1 for s in spans if s.error)
    when = datetime.fromtimestamp(start / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if spans else "-"
    summary = (f"{len(spans)} spans, {len(services)} services ({', '.join(services)}), {errors} with errors, "
               f"{_ms(total)}, started {when}")
    legend = " ".join(f'<span class="lang" style="background:{c}">{m}</span>' for m, c in LANGUAGE_COLOURS.items())
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>trace {_e(trace_id)}</title><style>{STYLE}</style></head>\n<body>"
        f'<h1>trace <code>{_e(trace_id)}</code></h1><div class="summary">{_e(summary)} · {legend}'
        " · click a span for its attributes, ▾ to fold its children</div>\n"
        '<table><colgroup><col class="label"><col><col class="duration"></colgroup>'
        f'<thead><tr><th>SPAN</th><th><div class="axis">{ticks}</div></th><th class="duration">DURATION</th></tr>'
        f"</thead><tbody>\n{rows}</tbody></table>\n"
        f"{'<p>(no spans)</p>' if not spans else ''}<script>{SCRIPT}</script></body></html>\n")
