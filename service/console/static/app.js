// grok-gateway console: one page, no build step, no third-party code, no request to another host.
// Every name from the data reaches the page as text (textContent / text nodes), never as HTML.
'use strict';

const KEY_STORE = 'grok-gateway.console.key';
const REFRESH_MS = 30000;
const DAYS = 30;
const PALETTE = ['#2563eb', '#16a34a', '#d97706', '#9333ea', '#0891b2', '#dc2626', '#65a30d',
  '#c026d3', '#475569', '#ea580c'];

const state = { key: null, role: null, timer: null, metric: 'cost', secret: null, notice: null };

// ---- DOM helpers: text only -------------------------------------------------------------

function append(node, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else if (name === 'value') node.value = value;
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  return append(node, children);
}

const SVG_NS = 'http://www.w3.org/2000/svg';
function svg(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [name, value] of Object.entries(attrs || {})) node.setAttribute(name, String(value));
  return append(node, children);
}

function $(id) { return document.getElementById(id); }

// Replace a node's children (nulls and falses skipped, strings as text).
function fill(node, ...children) {
  node.replaceChildren();
  return append(node, children);
}

// ---- formatting ---------------------------------------------------------------------------

const integer = new Intl.NumberFormat('en-US');
const compact = new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 });

function usd(value) {
  const v = Number(value) || 0;
  if (v === 0) return '$0';
  if (Math.abs(v) < 0.01) return '$' + Number(v.toPrecision(2));
  return '$' + v.toLocaleString('en-US', { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}
function tokens(u) { return (u.input_tokens || 0) + (u.output_tokens || 0) + (u.reasoning_tokens || 0); }
function count(value) { return Math.abs(value) >= 100000 ? compact.format(value) : integer.format(value); }
function metricValue(u, metric) {
  return metric === 'cost' ? Number(u.cost_usd) || 0 : metric === 'tokens' ? tokens(u) : u.requests || 0;
}
function metricText(value, metric) { return metric === 'cost' ? usd(value) : count(value); }
function axisText(value, metric, top) {
  if (metric !== 'cost' || value === 0 || top >= 4) return metricText(value, metric);
  return '$' + Number(value.toPrecision(3));
}

function isoDay(date) { return date.toISOString().slice(0, 10); }
function today() { return isoDay(new Date()); }
function daysBack(n) { const d = new Date(); d.setUTCDate(d.getUTCDate() - n); return isoDay(d); }
function monthStart() { return today().slice(0, 8) + '01'; }
function duration(seconds) {
  if (seconds === null || seconds === undefined) return '';
  if (seconds < 120) return seconds + ' s';
  if (seconds < 7200) return Math.round(seconds / 60) + ' min';
  if (seconds < 172800) return Math.round(seconds / 3600) + ' h';
  return Math.round(seconds / 86400) + ' d';
}
function windowName(seconds) {
  const names = { 1: 'second', 60: 'minute', 3600: 'hour', 86400: 'day' };
  return names[seconds] || duration(seconds);
}

// ---- the API ------------------------------------------------------------------------------

async function api(path, options = {}) {
  const headers = { Authorization: 'Bearer ' + state.key, Accept: 'application/json' };
  const init = { method: options.method || 'GET', headers, credentials: 'omit', cache: 'no-store' };
  if (options.body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(options.body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (error) {
    return { status: 0, ok: false, doc: null, message: 'the gateway did not answer' };
  }
  let doc = null;
  try { doc = await response.json(); } catch (error) { doc = null; }
  const message = doc && doc.error && typeof doc.error.message === 'string'
    ? doc.error.message : 'HTTP ' + response.status;
  return { status: response.status, ok: response.ok, doc, message };
}

// ---- sign in and out ------------------------------------------------------------------------

async function signIn(key) {
  state.key = key;
  const status = await api('/admin/v1/status');
  if (status.ok) return 'operator';
  const usage = await api('/api/v1/usage');
  if (usage.ok) return 'tenant';
  state.key = null;
  return null;
}

function signOut() {
  sessionStorage.removeItem(KEY_STORE);
  clearInterval(state.timer);
  Object.assign(state, { key: null, role: null, timer: null, secret: null, notice: null });
  $('view').replaceChildren();
  $('session').replaceChildren();
  showLogin('');
}

function showLogin(message) {
  $('login').hidden = false;
  $('login-error').textContent = message;
  $('login-key').value = '';
  $('login-key').focus();
}

async function start(key) {
  const role = await signIn(key);
  if (role === null) {
    sessionStorage.removeItem(KEY_STORE);
    showLogin('The gateway did not accept this key.');
    return;
  }
  sessionStorage.setItem(KEY_STORE, key);
  state.role = role;
  $('login').hidden = true;
  await refresh();
  state.timer = setInterval(refresh, REFRESH_MS);
}

async function refresh() {
  if (state.notice && !state.secret && Date.now() - state.notice.at > 10000) state.notice = null;
  try {
    if (state.role === 'operator') await renderOperator();
    else if (state.role === 'tenant') await renderTenant();
  } catch (error) {
    banner('error', 'Could not show the data: ' + error.message);
  }
}

function renderSession(label) {
  fill($('session'),
    el('span', { class: 'role ' + state.role }, label),
    el('span', { class: 'muted updated', id: 'updated' }, 'updated ' + new Date().toLocaleTimeString()),
    el('button', { type: 'button', onclick: () => refresh() }, 'Refresh'),
    el('button', { type: 'button', onclick: signOut }, 'Sign out'),
  );
}

function banner(kind, text) {
  const view = $('view');
  const existing = view.querySelector('.banner');
  if (existing) existing.remove();
  view.prepend(el('div', { class: 'banner ' + kind, role: kind === 'error' ? 'alert' : 'status' }, text));
}

// ---- pieces shared by both views --------------------------------------------------------

function card(title, extra, ...body) {
  return el('section', { class: 'card' },
    el('div', { class: 'card-head' }, el('h2', {}, title), extra || null), ...body);
}

function kpi(label, value, sub) {
  return el('div', { class: 'kpi' }, el('div', { class: 'kpi-label' }, label),
    el('div', { class: 'kpi-value' }, value), sub ? el('div', { class: 'kpi-sub muted' }, sub) : null);
}

function meter(used, limit, text) {
  if (!limit) return el('span', { class: 'muted' }, text || '—');
  const share = Math.max(0, used / limit);
  const level = share >= 0.9 ? 'high' : share >= 0.7 ? 'mid' : 'low';
  const fill = el('span', { class: 'meter-fill ' + level });
  fill.style.width = Math.min(100, share * 100).toFixed(1) + '%';
  return el('div', { class: 'meter-cell', title: (share * 100).toFixed(1) + '% used' },
    el('span', { class: 'meter' }, fill), el('span', { class: 'meter-text' }, text));
}

function table(headers, rows, empty) {
  if (!rows.length) return el('p', { class: 'muted empty' }, empty);
  return el('div', { class: 'table-wrap' }, el('table', {},
    el('thead', {}, el('tr', {}, headers.map((h) => el('th', { class: h.num ? 'num' : '' }, h.label)))),
    el('tbody', {}, rows)));
}

function cell(content, num) { return el('td', { class: num ? 'num' : '' }, content); }

// A stacked bar chart of `series` (name -> day -> value) over `days`, drawn as SVG.
function stackedBars(days, series, metric) {
  const names = Object.keys(series).sort();
  const width = Math.max(640, Math.min(1400, ($('view').clientWidth || 1000) - 48));
  const height = 240;
  const pad = { left: 64, right: 12, top: 12, bottom: 28 };
  const plotW = width - pad.left - pad.right;
  const plotH = height - pad.top - pad.bottom;
  const totals = days.map((day) => names.reduce((sum, n) => sum + (series[n][day] || 0), 0));
  const top = niceMax(Math.max(...totals, 0));
  const slot = plotW / days.length;
  const barW = Math.max(4, slot * 0.7);
  const chart = svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, width, height,
    role: 'img', 'aria-label': 'Usage per day by tenant' });
  for (let i = 0; i <= 4; i += 1) {
    const value = (top * i) / 4;
    const y = pad.top + plotH - (plotH * i) / 4;
    chart.append(svg('line', { x1: pad.left, x2: width - pad.right, y1: y, y2: y, class: 'grid' }));
    chart.append(svg('text', { x: pad.left - 8, y: y + 4, class: 'axis', 'text-anchor': 'end' },
      axisText(value, metric, top)));
  }
  days.forEach((day, index) => {
    const x = pad.left + index * slot + (slot - barW) / 2;
    let y = pad.top + plotH;
    names.forEach((name, n) => {
      const value = series[name][day] || 0;
      if (!value || !top) return;
      const h = (value / top) * plotH;
      y -= h;
      chart.append(svg('rect', { x, y, width: barW, height: Math.max(h, 0.5), fill: PALETTE[n % PALETTE.length],
        class: 'bar' }, svg('title', {}, `${name} · ${day}: ${metricText(value, metric)}`)));
    });
    if (index % 5 === 0 || index === days.length - 1) {
      chart.append(svg('text', { x: x + barW / 2, y: height - 8, class: 'axis', 'text-anchor': 'middle' },
        day.slice(5)));
    }
  });
  const legend = el('div', { class: 'legend' }, names.map((name, n) => {
    const swatch = el('span', { class: 'swatch' });
    swatch.style.background = PALETTE[n % PALETTE.length];
    return el('span', { class: 'legend-item' }, swatch, name);
  }));
  return el('div', { class: 'chart-wrap' }, chart, names.length ? legend
    : el('p', { class: 'muted empty' }, 'No usage in the last 30 days.'));
}

function niceMax(value) {
  if (value <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) if (step * power >= value) return step * power;
  return 10 * power;
}

// ---- operator view ------------------------------------------------------------------------

const EMPTY = { requests: 0, input_tokens: 0, cached_input_tokens: 0, output_tokens: 0,
  reasoning_tokens: 0, cost_usd: 0 };

function add(into, row) {
  for (const name of Object.keys(EMPTY)) into[name] = (into[name] || 0) + (Number(row[name]) || 0);
  return into;
}

async function renderOperator() {
  const first = [daysBack(DAYS - 1), monthStart()].sort()[0];
  const [status, usage, keys] = await Promise.all([
    api('/admin/v1/status'),
    api(`/admin/v1/usage?from=${first}&to=${today()}&group_by=day,tenant,key`),
    api('/admin/v1/keys'),
  ]);
  if (status.status === 401) { signOut(); return; }
  renderSession('Operator');
  const view = $('view');
  if (!status.ok) { banner('error', 'Status: ' + status.message); return; }
  const rows = usage.ok && usage.doc && Array.isArray(usage.doc.data) ? usage.doc.data : [];
  const day = today();
  const month = monthStart();
  const days = Array.from({ length: DAYS }, (_, i) => daysBack(DAYS - 1 - i));
  const byTenant = {};
  const byKey = {};
  const total = { today: { ...EMPTY }, month: { ...EMPTY } };
  for (const row of rows) {
    const tenant = row.tenant === null || row.tenant === undefined ? '-' : String(row.tenant);
    const t = byTenant[tenant] || (byTenant[tenant] = { days: {}, today: { ...EMPTY }, month: { ...EMPTY } });
    const k = byKey[row.key] || (byKey[row.key] = { tenant, today: { ...EMPTY }, month: { ...EMPTY } });
    t.days[row.day] = add(t.days[row.day] || {}, row);
    if (row.day === day) { add(t.today, row); add(k.today, row); add(total.today, row); }
    if (row.day >= month) { add(t.month, row); add(k.month, row); add(total.month, row); }
  }
  const replica = status.doc.replica || {};
  const series = {};
  for (const [tenant, t] of Object.entries(byTenant)) {
    series[tenant] = {};
    for (const [d, u] of Object.entries(t.days)) series[tenant][d] = metricValue(u, state.metric);
  }
  const toggle = el('div', { class: 'toggle', role: 'group', 'aria-label': 'Measure' },
    [['cost', 'Spend'], ['tokens', 'Tokens'], ['requests', 'Requests']].map(([metric, label]) =>
      el('button', { type: 'button', class: state.metric === metric ? 'on' : '', 'aria-pressed': String(state.metric === metric),
        onclick: () => { state.metric = metric; refresh(); } }, label)));

  fill(view,
    state.notice ? el('div', { class: 'banner ' + state.notice.kind, role: 'status' }, state.notice.text) : null,
    state.secret ? secretPanel() : null,
    el('div', { class: 'kpis' },
      kpi('Spend today', usd(total.today.cost_usd), 'UTC ' + day),
      kpi('Spend this month', usd(total.month.cost_usd), 'since ' + month),
      kpi('Tokens today', count(tokens(total.today)), count(total.today.requests) + ' requests'),
      kpi('Tokens this month', count(tokens(total.month)), count(total.month.requests) + ' requests'),
      kpi('Upstream', String(replica.upstream || 'unknown'), 'limiter: ' + String(replica.limiter || '?')),
      kpi('Active streams', count(replica.active_streams || 0), 'on the replica that answered')),
    usage.ok ? null : el('div', { class: 'banner error', role: 'alert' }, 'Usage: ' + usage.message),
    card('Last 30 days by tenant', toggle, stackedBars(days, series, state.metric)),
    card('Tenants: budgets against use', null, tenantTable(status.doc.tenants || [], byTenant)),
    card('Keys', keys.ok ? null : el('span', { class: 'muted' }, keysApiNote(keys)),
      keyTable(status.doc.keys || [], keys.ok ? keys.doc.data || [] : null, byKey),
      keys.ok ? createForm() : null),
  );
}

function keysApiNote(keys) {
  return keys.status === 404 || keys.status === 405
    ? 'This gateway has no admin keys API: keys come from the key file (read-only here).'
    : 'Keys API: ' + keys.message;
}

function budgetText(list) {
  if (!list || !list.length) return '—';
  return list.map((w) => (w.usd !== undefined ? `${usd(w.usd)}/${w.period}`
    : `${count(w.limit)}/${windowName(w.seconds)}`)).join(' · ');
}

// A budget against what was used: day windows against today, month spend against the month.
function budgetMeters(budgets, used) {
  const meters = [];
  for (const w of budgets.requests || []) {
    if (w.seconds === 86400) meters.push(meter(used.today.requests, w.limit, `${count(used.today.requests)} / ${count(w.limit)} req today`));
  }
  for (const w of budgets.tokens || []) {
    if (w.seconds === 86400) meters.push(meter(tokens(used.today), w.limit, `${count(tokens(used.today))} / ${count(w.limit)} tok today`));
  }
  for (const s of budgets.spend || []) {
    const spent = s.period === 'day' ? used.today.cost_usd : used.month.cost_usd;
    meters.push(meter(spent, s.usd, `${usd(spent)} / ${usd(s.usd)} ${s.period === 'day' ? 'today' : 'this month'}`));
  }
  return meters.length ? el('div', { class: 'meters' }, meters) : el('span', { class: 'muted' }, 'no daily or monthly budget');
}

function usageCells(used) {
  return [
    cell(el('span', {}, usd(used.today.cost_usd), el('span', { class: 'muted small' }, ' · ' + count(tokens(used.today)) + ' tok')), true),
    cell(el('span', {}, usd(used.month.cost_usd), el('span', { class: 'muted small' }, ' · ' + count(tokens(used.month)) + ' tok')), true),
  ];
}

function budgetLines(budgets) {
  const lines = [['requests', budgets.requests], ['tokens', budgets.tokens], ['spend', budgets.spend]]
    .filter(([, list]) => list && list.length)
    .map(([label, list]) => el('span', { class: 'budget-line' }, el('span', { class: 'muted small' }, label + ' '), budgetText(list)));
  if (budgets.concurrent) {
    lines.push(el('span', { class: 'budget-line' }, el('span', { class: 'muted small' }, 'concurrent '), count(budgets.concurrent)));
  }
  return lines.length ? el('span', { class: 'budget-text' }, lines) : el('span', { class: 'muted small' }, 'none of its own');
}

function tenantTable(tenants, byTenant) {
  const names = new Set([...tenants.map((t) => t.id), ...Object.keys(byTenant)]);
  const known = Object.fromEntries(tenants.map((t) => [t.id, t]));
  const rows = [...names].sort().map((name) => {
    const budgets = known[name] || { requests: [], tokens: [], spend: [] };
    const used = byTenant[name] || { today: EMPTY, month: EMPTY };
    return el('tr', {},
      cell(el('span', { class: 'name' }, name)),
      cell(budgetLines(budgets)),
      cell(budgetMeters(budgets, used)),
      ...usageCells(used));
  });
  return table([{ label: 'Tenant' }, { label: 'Budgets' }, { label: 'Used of budget' },
    { label: 'Today', num: true }, { label: 'This month', num: true }], rows, 'No tenants yet.');
}

function keyTable(statusKeys, apiKeys, byKey) {
  const merged = {};
  for (const k of statusKeys) merged[k.id] = { id: k.id, tenant: k.tenant, budgets: k, source: 'file', disabled: false };
  if (apiKeys) {
    for (const k of apiKeys) {
      merged[k.id] = Object.assign(merged[k.id] || { id: k.id, budgets: null }, {
        tenant: k.tenant, source: k.source, disabled: k.disabled, expires_at: k.expires_at, api: k,
      });
    }
  }
  for (const [id, used] of Object.entries(byKey)) {
    if (!merged[id]) merged[id] = { id, tenant: used.tenant, budgets: null, source: 'ledger only', gone: true };
  }
  const rows = Object.values(merged).sort((a, b) => (a.id < b.id ? -1 : 1)).map((k) => {
    const used = byKey[k.id] || { today: EMPTY, month: EMPTY };
    const budgets = k.budgets || { requests: [], tokens: [], spend: [] };
    const status = k.gone ? 'removed' : k.disabled ? 'disabled' : 'active';
    return el('tr', { 'data-key': k.id },
      cell(el('span', { class: 'name mono' }, k.id)),
      cell(el('span', { class: 'name' }, k.tenant === null || k.tenant === undefined ? '—' : k.tenant)),
      cell(el('span', { class: 'pill ' + status }, status), false),
      cell(el('span', { class: 'muted small' }, k.source)),
      cell(k.budgets ? budgetLines(budgets) : el('span', { class: 'muted small' }, '—')),
      cell(budgetMeters(budgets, used)),
      ...usageCells(used),
      cell(apiKeys && k.api ? keyActions(k) : el('span', { class: 'muted small' }, k.source === 'file' ? 'edit the key file' : '')));
  });
  return table([{ label: 'Key' }, { label: 'Tenant' }, { label: 'Status' }, { label: 'Source' },
    { label: 'Budgets' }, { label: 'Used of budget' }, { label: 'Today', num: true }, { label: 'This month', num: true }, { label: '' }],
  rows, 'No keys.');
}

function keyActions(k) {
  if (k.source === 'file') return el('span', { class: 'muted small', title: 'Change the key file to change this key' }, 'edit the key file');
  const id = encodeURIComponent(k.id);
  const box = el('div', { class: 'actions' });
  const rotate = el('button', { type: 'button', onclick: () => act(
    api(`/admin/v1/keys/${id}/rotate`, { method: 'POST', body: { grace_seconds: 3600 } }),
    (doc) => ({ secret: doc, text: `Rotated ${k.id}: the old secret works for one more hour.` })) }, 'Rotate');
  const toggle = el('button', { type: 'button', onclick: () => act(
    api(`/admin/v1/keys/${id}`, { method: 'PATCH', body: { disabled: !k.disabled } }),
    () => ({ text: `${k.disabled ? 'Enabled' : 'Disabled'} ${k.id}.` })) }, k.disabled ? 'Enable' : 'Disable');
  const remove = el('button', { type: 'button', class: 'danger', onclick: () => {
    if (remove.dataset.armed !== 'yes') {
      remove.dataset.armed = 'yes';
      remove.textContent = 'Really delete?';
      setTimeout(() => { remove.dataset.armed = ''; remove.textContent = 'Delete'; }, 5000);
      return;
    }
    act(api(`/admin/v1/keys/${id}`, { method: 'DELETE' }), () => ({ text: `Deleted ${k.id}.` }));
  } }, 'Delete');
  return append(box, [rotate, toggle, remove]);
}

async function act(call, done) {
  const result = await call;
  if (!result.ok) {
    state.notice = { kind: 'error', text: result.message, at: Date.now() };
  } else {
    const outcome = done(result.doc);
    state.secret = outcome.secret || null;
    state.notice = { kind: 'ok', text: outcome.text, at: Date.now() };
  }
  await refresh();
}

function secretPanel() {
  const doc = state.secret;
  const input = el('input', { type: 'text', readonly: true, class: 'mono secret', value: String(doc.secret), 'aria-label': 'New secret' });
  const panel = el('div', { class: 'secret-panel', role: 'status' },
    el('strong', {}, 'New secret for ', el('span', { class: 'mono' }, doc.id), ': copy it now, it will not be shown again.'),
    el('div', { class: 'secret-row' }, input,
      el('button', { type: 'button', onclick: () => { input.select(); navigator.clipboard && navigator.clipboard.writeText(input.value); } }, 'Copy'),
      el('button', { type: 'button', class: 'primary', onclick: () => { state.secret = null; state.notice = null; refresh(); } }, 'Done')));
  setTimeout(() => panel.scrollIntoView({ block: 'center' }), 0);  // the form may be far below
  return panel;
}

function createForm() {
  const field = (name, label, placeholder) => el('label', { class: 'field' }, el('span', {}, label),
    el('input', { name, placeholder, autocomplete: 'off', spellcheck: 'false' }));
  const form = el('form', { class: 'create', autocomplete: 'off' },
    el('h3', {}, 'New key'),
    el('div', { class: 'fields' },
      field('tenant', 'Tenant', 'acme'), field('id', 'Id (optional)', 'acme-prod'),
      field('requests', 'Requests', '600/minute'), field('tokens', 'Tokens', '100000/minute'),
      field('spend', 'Spend (USD)', '25/day;500/month'), field('concurrent', 'Concurrent', '8')),
    el('button', { type: 'submit', class: 'primary' }, 'Create key'));
  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const body = {};
    for (const [name, value] of data.entries()) {
      const text = String(value).trim();
      if (!text) continue;
      body[name] = name === 'concurrent' ? Number(text) : text;
    }
    act(api('/admin/v1/keys', { method: 'POST', body }),
      (doc) => ({ secret: doc, text: `Created ${doc.id}.` }));
  });
  return form;
}

// ---- tenant view --------------------------------------------------------------------------

async function renderTenant() {
  const usage = await api('/api/v1/usage');
  if (usage.status === 401) { signOut(); return; }
  renderSession('Tenant');
  if (!usage.ok) { banner('error', 'Usage: ' + usage.message); return; }
  const doc = usage.doc;
  const mine = doc.usage.key;
  const shared = doc.usage.tenant;
  fill($('view'),
    el('div', { class: 'kpis' },
      kpi('Key', el('span', { class: 'mono' }, doc.key_id), doc.tenant === null ? 'no tenant' : el('span', {}, 'tenant ', el('span', { class: 'name' }, doc.tenant))),
      kpi('Spend today', usd(mine.today.cost_usd), 'this key'),
      kpi('Spend this month', usd(mine.month.cost_usd), 'this key'),
      kpi('Tokens today', count(tokens(mine.today)), count(mine.today.requests) + ' requests'),
      kpi('Tokens this month', count(tokens(mine.month)), count(mine.month.requests) + ' requests')),
    card('Budgets used now', null, budgetChart(doc.limits || [])),
    card('Budgets', null, limitTable(doc.limits || [])),
    card('Usage', null, usageTable(mine, shared)),
  );
}

function limitLabel(l) {
  const scope = l.scope === 'tenant' ? 'tenant' : 'key';
  if (l.kind === 'concurrent') return `${scope} · concurrent`;
  if (l.kind === 'spend') return `${scope} · spend per ${l.window}`;
  return `${scope} · ${l.kind} per ${l.window}`;
}

function limitAmount(l, value) { return l.kind === 'spend' ? usd(value) : count(value); }

// Horizontal bars: the share of each budget used in its current window.
function budgetChart(limits) {
  if (!limits.length) return el('p', { class: 'muted empty' }, 'This key has no budgets.');
  const rowH = 30;
  const width = Math.max(640, Math.min(1100, ($('view').clientWidth || 900) - 48));
  const labelW = 220;
  const barW = width - labelW - 170;
  const chart = svg('svg', { class: 'chart', viewBox: `0 0 ${width} ${limits.length * rowH + 8}`, width,
    height: limits.length * rowH + 8, role: 'img', 'aria-label': 'Share of each budget used' });
  limits.forEach((l, i) => {
    const used = Math.max(0, Number(l.limit) - Number(l.remaining));
    const share = Number(l.limit) ? Math.min(1, used / Number(l.limit)) : 0;
    const y = 4 + i * rowH;
    const level = share >= 0.9 ? '#dc2626' : share >= 0.7 ? '#d97706' : '#2563eb';
    chart.append(
      svg('text', { x: 0, y: y + 18, class: 'axis label' }, limitLabel(l)),
      svg('rect', { x: labelW, y: y + 6, width: barW, height: 16, rx: 3, class: 'track' }),
      svg('rect', { x: labelW, y: y + 6, width: Math.max(share * barW, share ? 2 : 0), height: 16, rx: 3, fill: level },
        svg('title', {}, `${limitAmount(l, used)} of ${limitAmount(l, l.limit)}`)),
      svg('text', { x: labelW + barW + 8, y: y + 18, class: 'axis' },
        `${limitAmount(l, used)} / ${limitAmount(l, l.limit)}`));
  });
  return el('div', { class: 'chart-wrap' }, chart);
}

function limitTable(limits) {
  const rows = limits.map((l) => el('tr', {},
    cell(l.scope), cell(l.kind), cell(l.window === null ? '—' : l.window),
    cell(limitAmount(l, l.limit), true), cell(limitAmount(l, l.remaining), true),
    cell(l.reset_seconds === null ? '—' : duration(l.reset_seconds), true)));
  return table([{ label: 'Scope' }, { label: 'Kind' }, { label: 'Window' }, { label: 'Limit', num: true },
    { label: 'Remaining', num: true }, { label: 'Resets in', num: true }], rows, 'No budgets.');
}

function usageTable(mine, shared) {
  const line = (label, u) => el('tr', {}, cell(label), cell(count(u.requests), true),
    cell(count(u.input_tokens), true), cell(count(u.output_tokens + (u.reasoning_tokens || 0)), true),
    cell(usd(u.cost_usd), true));
  const rows = [line('This key, today', mine.today), line('This key, this month', mine.month)];
  if (shared) rows.push(line('Tenant, today', shared.today), line('Tenant, this month', shared.month));
  return table([{ label: '' }, { label: 'Requests', num: true }, { label: 'Input tokens', num: true },
    { label: 'Output tokens', num: true }, { label: 'Cost', num: true }], rows, '');
}

// ---- start --------------------------------------------------------------------------------

document.addEventListener('DOMContentLoaded', () => {
  $('login-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const key = $('login-key').value.trim();
    if (key) start(key);
  });
  const saved = sessionStorage.getItem(KEY_STORE);
  if (saved) start(saved);
  else showLogin('');
});
