// The Teach view: one kept tweet at a time from a node (dashboard/teach_web.py relays to
// the node's teach protocol). Text goes into the page with textContent only, never markup.
'use strict';

const $ = (id) => document.getElementById(id);
const KEYS = { 1: 'negative', 2: 'neutral', 3: 'positive', 0: 'unrelated', s: 'skip' };
let current = null; // the tweet shown: {digest, text, label, scores, related_score}
let busy = false;

function say(message) { $('status').textContent = message; }

async function call(path, body) {
  const options = body === undefined ? {} : {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Repedge': 'teach' },
    body: JSON.stringify(body),
  };
  const response = await fetch(path, options);
  const data = await response.json();
  if (!response.ok) throw new Error(data.error || response.statusText);
  return data;
}

const where = () => ({ node: $('node').value, entity: $('entity').value });
const query = (extra) => new URLSearchParams({ ...where(), ...(extra || {}) }).toString();

function pct(acc) {
  if (!acc) return '–';
  const p = (x) => (100 * x).toFixed(1);
  return `${p(acc.accuracy)} % (${p(acc.low)}–${p(acc.high)}, n=${acc.total})`;
}

function showStats(stats) {
  if (!stats || !stats.counts) return;
  $('count').textContent = stats.counts.labels;
  $('skipped').textContent = stats.counts.skipped;
  $('remaining').textContent = stats.counts.remaining;
  $('cur-pol').textContent = pct(stats.current_model.polarity);
  $('cur-rel').textContent = pct(stats.current_model.related);
  $('cv-pol').textContent = pct(stats.adapted_cv.polarity);
  $('cv-rel').textContent = pct(stats.adapted_cv.related);
}

function showTweet(tweet) {
  current = tweet;
  $('card').hidden = !tweet;
  document.body.dataset.digest = tweet ? tweet.digest : '';
  if (!tweet) { say('No tweet left to label for this entity: the node labels more as they come.'); return; }
  say('1 negative · 2 neutral · 3 positive · 0 not about the brand · s skip · z undo');
  $('text').textContent = tweet.text;
  $('guess').textContent = tweet.label;
  $('guess-scores').textContent = Object.entries(tweet.scores)
    .map(([k, v]) => `${k} ${(100 * v).toFixed(0)} %`).join(', ');
  $('guess-related').textContent = tweet.related_score == null ? '–'
    : `${(100 * tweet.related_score).toFixed(0)} %`;
}

async function next() {
  const data = await call(`/api/teach/next?${query()}`);
  showStats(data);
  showTweet(data.tweet);
}

async function answer(value) {
  if (!current || busy) return;
  busy = true;
  try {
    await call('/api/teach/answer', { ...where(), digest: current.digest, answer: value });
    await next();
  } catch (e) { say(`error: ${e.message}`); } finally { busy = false; }
}

async function undo() {
  if (busy) return;
  busy = true;
  try {
    const data = await call('/api/teach/undo', where());
    showStats(data);
    if (data.tweet) showTweet(data.tweet); else await next();
  } catch (e) { say(`error: ${e.message}`); } finally { busy = false; }
}

async function adapt() {
  $('adapt').disabled = true;
  $('adapt-result').hidden = false;
  $('adapt-result').textContent = 'adapting on the node…';
  try {
    const data = await call('/api/teach/adapt', where());
    $('adapt-result').textContent = `${data.reason} (${data.seconds} s)\n${data.summary}`;
    document.body.dataset.adapted = data.swapped ? 'yes' : 'no';
  } catch (e) { $('adapt-result').textContent = `error: ${e.message}`; }
  $('adapt').disabled = false;
}

function fill(select, values, keep) {
  select.replaceChildren(...values.map((v) => {
    const option = document.createElement('option');
    option.value = v; option.textContent = v; return option;
  }));
  if (values.includes(keep)) select.value = keep;
}

async function loadEntities() {
  try {
    const data = await call(`/api/teach/entities?${new URLSearchParams({ node: $('node').value })}`);
    const names = data.entities.filter((e) => e.texts > 0 || e.labels > 0).map((e) => e.entity);
    fill($('entity'), names, new URLSearchParams(location.search).get('entity'));
    if (names.length) await next(); else say('This node keeps no texts yet (it keeps tweets that name an entity).');
  } catch (e) { say(`error: ${e.message}`); }
}

async function loadNodes() {
  const data = await call('/api/teach/nodes');
  if (!data.nodes.length) { say('No node has reported yet; waiting…'); setTimeout(loadNodes, 1000); return; }
  fill($('node'), data.nodes, new URLSearchParams(location.search).get('node'));
  await loadEntities();
}

document.addEventListener('keydown', (event) => {
  if (event.target.tagName === 'SELECT' || event.ctrlKey || event.metaKey || event.altKey) return;
  if (event.key === 'z') { undo(); return; }
  if (event.key in KEYS) answer(KEYS[event.key]);
});
document.querySelectorAll('[data-answer]').forEach((b) => b.addEventListener('click', () => answer(b.dataset.answer)));
$('undo').addEventListener('click', undo);
$('adapt').addEventListener('click', adapt);
$('node').addEventListener('change', loadEntities);
$('entity').addEventListener('change', () => next().catch((e) => say(`error: ${e.message}`)));
$('export').addEventListener('click', (event) => {
  event.preventDefault();
  location.href = `/api/teach/export.tsv?${query()}`;
});
loadNodes().catch((e) => say(`error: ${e.message}`));
