// The review page: the server's scored items as a grid, the operator's labels posted back.
'use strict';

let items = [];
let threshold = 0.5;
let scoreName = 'P(defect)';  // or a saved detector's score (the server's /review/items)

function token() { return sessionStorage.getItem('nexjax-token') || ''; }

// The server's per-process secret, filled into the page's HTML: it proves a label comes from
// this page, not from another site the operator has open.
const csrf = document.querySelector('meta[name="csrf-token"]').content;

async function api(path, options = {}) {
  const headers = Object.assign({'X-CSRF-Token': csrf}, options.headers || {});
  if (token()) headers['Authorization'] = 'Bearer ' + token();
  let response = await fetch(path, Object.assign({}, options, {headers}));
  if (response.status === 401) {
    const given = window.prompt('This server needs its token:');
    if (!given) throw new Error('no token given');
    sessionStorage.setItem('nexjax-token', given);
    return api(path, options);
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({error: response.statusText}));
    throw new Error(body.error || response.statusText);
  }
  return response;
}

function shown() {
  const filter = document.getElementById('filter').value;
  const keep = {
    all: () => true,
    defect: (it) => it.defect,
    good: (it) => !it.defect,
    unlabelled: (it) => !it.label,
    disagree: (it) => it.label && (it.label === 'defect') !== it.defect,
  }[filter];
  const order = document.getElementById('sort').value;
  const sorted = items.filter(keep);
  if (order === 'file') sorted.sort((a, b) => a.file.localeCompare(b.file));
  else sorted.sort((a, b) => order === 'asc' ? a.p_defect - b.p_defect : b.p_defect - a.p_defect);
  return sorted;
}

// Overlays load as they scroll into view, two at a time: the browser's few connections per
// server stay free for the operator's labels.
const pending = [];
let inFlight = 0;

function loadOverlays() {
  while (inFlight < 2 && pending.length) {
    const img = pending.shift();
    if (!img.isConnected) continue;
    inFlight += 1;
    api('/review/overlay/' + encodeURIComponent(img.dataset.id))
      .then((r) => r.blob()).then((blob) => { img.src = URL.createObjectURL(blob); })
      .catch((e) => { img.alt = 'overlay: ' + e.message; })
      .finally(() => { inFlight -= 1; loadOverlays(); });
  }
}

const overlays = new IntersectionObserver((entries) => {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    overlays.unobserve(entry.target);
    pending.push(entry.target);
  }
  loadOverlays();
});

function card(item) {
  const div = document.createElement('div');
  div.className = 'card ' + (item.defect ? 'defect' : 'good');
  div.dataset.id = item.id;
  div.dataset.p = item.p_defect;
  const img = document.createElement('img');
  img.alt = 'Grad-CAM overlay of ' + item.file;
  img.dataset.id = item.id;
  overlays.observe(img);
  const file = document.createElement('div');
  file.className = 'file';
  file.textContent = item.file + (item.source === 'request' ? ' (request)' : '');
  const decision = document.createElement('div');
  decision.className = 'decision';
  decision.textContent = scoreName + ' ' + item.p_defect.toFixed(3) + ': ' +
    (item.defect ? 'defect' : 'good');
  const label = document.createElement('div');
  label.className = 'label';
  label.textContent = 'label: ' + (item.label || '-');
  div.append(img, file, decision, label);
  for (const name of ['good', 'defect']) {
    const button = document.createElement('button');
    button.type = 'button';
    button.textContent = name;
    button.className = 'set-' + name + (item.label === name ? ' chosen' : '');
    button.addEventListener('click', () => setLabel(item, item.label === name ? null : name));
    div.append(button);
  }
  return div;
}

function render() {
  const grid = document.getElementById('grid');
  const list = shown();
  grid.replaceChildren(...list.map(card));
  const labelled = items.filter((it) => it.label).length;
  document.getElementById('summary').textContent = `${list.length} of ${items.length} shown, ` +
    `${labelled} labelled, threshold ${threshold.toFixed(3)}`;
}

async function setLabel(item, label) {
  try {
    const response = await api('/review/label', {
      method: 'POST', headers: {'Content-Type': 'application/json'},
      body: JSON.stringify({id: item.id, label}),
    });
    Object.assign(item, await response.json());
    document.getElementById('status').textContent = '';
    render();
  } catch (e) {
    document.getElementById('status').textContent = 'Label not saved: ' + e.message;
  }
}

async function load() {
  try {
    const body = await (await api('/review/items')).json();
    items = body.items;
    threshold = body.threshold;
    scoreName = body.score;
    document.getElementById('status').textContent = '';
    render();
  } catch (e) {
    document.getElementById('status').textContent = 'Cannot load the items: ' + e.message;
  }
}

document.getElementById('sort').addEventListener('change', render);
document.getElementById('filter').addEventListener('change', render);
document.getElementById('reload').addEventListener('click', load);
load();
