// The city page in headless Chromium, as a person uses it. Driven by tests/it/browser.rs,
// which runs the bridge, Synapse and the Matrix users: at each `STEP <name> <json>` line
// this script waits for `GO <json>` on stdin (the Rust side acts in Matrix meanwhile).
// Every wait is on a condition with a deadline; a failure exits 1 with what was expected.
//
//   BRIDGE_URL PAGE_TOKEN PAGE_USER_ID ROOM_SLUG ROOM_NAME ROOM_ALIAS SEED_COUNT HISTORY_COUNT
//   SCREENSHOT_DIR [CHROMIUM]  node city.mjs

import { mkdtempSync, rmSync, mkdirSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateSync } from 'node:zlib';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (tests/it/browser.rs sets it)`);
  return value;
};
const BRIDGE = env('BRIDGE_URL');
const TOKEN = env('PAGE_TOKEN');
const PAGE_USER = env('PAGE_USER_ID');
const SLUG = env('ROOM_SLUG');
const ROOM_NAME = env('ROOM_NAME');
const ROOM_ALIAS = env('ROOM_ALIAS');
const SEEDS = Number(env('SEED_COUNT'));
const HISTORY = Number(env('HISTORY_COUNT'));
const SHOTS = env('SCREENSHOT_DIR');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const AXE = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

/** WCAG 2.1 A and AA rules of axe-core (contrast, names, labels, roles…) on the page as it is. */
async function audit(page, what) {
  // Evaluated through the debugging protocol: the page's CSP rightly refuses inline scripts.
  await page.evaluate(AXE);
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, {
      runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa'] },
    });
    return result.violations.map((v) => `${v.id} (${v.impact}): ${v.nodes.map((n) => n.target.join(' ')).slice(0, 5).join(', ')}`);
  });
  assert(violations.length === 0, `accessibility of ${what}: ${violations.join('; ')}`);
}

/** A real PNG of `w`×`h` pixels, for attaching. */
function png(w, h) {
  const crc32 = (bytes) => {
    let crc = ~0;
    for (const b of bytes) {
      crc ^= b;
      for (let i = 0; i < 8; i += 1) crc = crc & 1 ? (crc >>> 1) ^ 0xedb88320 : crc >>> 1;
    }
    return ~crc >>> 0;
  };
  const chunk = (kind, data) => {
    const out = Buffer.alloc(12 + data.length);
    out.writeUInt32BE(data.length, 0);
    out.write(kind, 4, 'latin1');
    data.copy(out, 8);
    out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
    return out;
  };
  const raw = Buffer.alloc((w * 3 + 1) * h);
  for (let y = 0; y < h; y += 1) {
    for (let x = 0; x < w; x += 1) raw.set([(x * 255) / w, (y * 255) / h, 160], y * (w * 3 + 1) + 1 + x * 3);
  }
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 2, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(raw)),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

const stdin = createInterface({ input: process.stdin })[Symbol.asyncIterator]();

/** Tells the Rust side where we are and waits for it to act. */
async function step(name, data = {}) {
  console.log(`STEP ${name} ${JSON.stringify(data)}`);
  const { value, done } = await stdin.next();
  if (done) throw new Error(`stdin closed at step ${name}`);
  if (!value.startsWith('GO')) throw new Error(`expected GO at step ${name}, got ${value}`);
  const rest = value.slice(2).trim();
  return rest ? JSON.parse(rest) : {};
}

function log(text) {
  process.stderr.write(`browser: ${text}\n`);
}

/** Polls `check` until it returns something truthy (deadline `timeout` ms). */
async function until(what, check, timeout = 30000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await check();
      if (last) return last;
    } catch (error) {
      last = error.message;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last seen: ${JSON.stringify(last)})`);
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}

function assert(condition, what) {
  if (!condition) throw new Error(`assertion failed: ${what}`);
}

const profiles = [];
async function launch(locale) {
  const profile = mkdtempSync(join(tmpdir(), 'city-browser-'));
  profiles.push(profile);
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    args: ARGS,
    locale,
    viewport: { width: 1200, height: 820 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.on('pageerror', (error) => pageErrors.push(`${error.name}: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') log(`console: ${message.text()}`);
  });
  return { context, page };
}
const pageErrors = [];

const card = (page) => page.locator(`[data-room-slug="${SLUG}"]`);
const escape = (text) => text.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
/** The message whose text is `text` (or starts with it, with `{ prefix: true }`). */
const messageWithBody = (page, text, { prefix = false } = {}) =>
  page
    .locator('[data-event-id]')
    .filter({ has: page.locator('.body', { hasText: new RegExp(`^${escape(text)}${prefix ? '' : '$'}`) }) });

async function bodies(page) {
  return page.$$eval('[data-event-id] .body', (nodes) => nodes.map((n) => n.textContent));
}

async function main() {
  mkdirSync(SHOTS, { recursive: true });
  const { context, page } = await launch('en-US');

  // Signed in from ?token=, which leaves the address bar.
  await page.goto(`${BRIDGE}/?token=${encodeURIComponent(TOKEN)}`);
  await until('the token removed from the URL', async () => !page.url().includes('token='));
  assert((await page.evaluate(() => sessionStorage.getItem('city.jwt'))) === TOKEN, 'the token is kept in sessionStorage');
  assert((await page.getAttribute('html', 'lang')) === 'en', 'English for an en-US browser');

  // The city: the seeded rooms and ours, with their counts, live.
  await card(page).waitFor({ state: 'visible' });
  const server = ROOM_ALIAS.slice(ROOM_ALIAS.indexOf(':') + 1);
  for (const seeded of ['general', 'welcome']) {
    const seededCard = page.locator(`[data-room-slug="${seeded}"]`);
    await seededCard.waitFor({ state: 'visible' });
    const href = await seededCard.getByRole('link', { name: 'Open in Element' }).getAttribute('href');
    assert(href === `https://matrix.to/#/#city_${seeded}:${server}`, `every room links to Element (${seeded}: ${href})`);
  }
  assert((await card(page).locator('h2').textContent()) === ROOM_NAME, 'the card shows the room name');
  assert((await card(page).locator('.description').textContent()) === `About ${ROOM_NAME}`, 'the card shows the description');
  const element = await card(page).getByRole('link', { name: 'Open in Element' }).getAttribute('href');
  assert(element === `https://matrix.to/#/${ROOM_ALIAS}`, `Open in Element links to matrix.to (${element})`);
  await until('the presence socket live', async () => (await page.getAttribute('#city-live', 'data-state')) === 'live');
  const before = Number(await until('a count on the card', () => card(page).getAttribute('data-online-count')));
  assert(Number.isInteger(before), 'data-online-count is a number');
  assert((await card(page).locator('.online').textContent()) === `${before} online`, 'the card says how many are online');
  assert(await card(page).locator('.typing-badge').isHidden(), 'no typing badge while nobody types');

  // A Matrix user comes online and joins: one more online, without a reload.
  await page.evaluate(() => {
    window.cityTestMarker = 'not reloaded';
  });
  await step('city', { online: before });
  await until(`${before + 1} online on the card`, async () =>
    (await card(page).getAttribute('data-online-count')) === String(before + 1) &&
    (await card(page).locator('.online').textContent()) === `${before + 1} online`);

  // … and types: the badge and the glow.
  await step('joined');
  await until('the typing badge', async () =>
    (await card(page).getAttribute('data-typing-count')) === '1' &&
    (await card(page).locator('.typing-badge').isVisible()) &&
    (await card(page).locator('.typing-badge').textContent()) === '1 typing');
  assert(await card(page).evaluate((node) => node.classList.contains('active')), 'a room where someone types glows');
  await audit(page, 'the city');
  await page.setViewportSize({ width: 1100, height: 420 });
  await page.screenshot({ path: join(SHOTS, 'city.png') });
  await page.setViewportSize({ width: 1200, height: 820 });

  await step('typing');
  await until('the typing badge gone', async () =>
    (await card(page).getAttribute('data-typing-count')) === '0' && (await card(page).locator('.typing-badge').isHidden()));

  // Ukrainian, by the switch.
  await page.getByLabel('Language').selectOption('uk');
  await until('the city in Ukrainian', async () =>
    (await page.textContent('#city-title')) === 'Місто' &&
    (await card(page).locator('.online').textContent()) === `${before + 1} онлайн`);
  assert((await page.getAttribute('html', 'lang')) === 'uk', 'html lang follows the switch');
  await page.getByLabel('Мова').selectOption('en');
  await until('back in English', async () => (await page.textContent('#city-title')) === 'The city');

  // A phone: nothing wider than the screen.
  await page.setViewportSize({ width: 375, height: 740 });
  await until('no horizontal scrolling at 375 px', () =>
    page.evaluate(() => document.documentElement.scrollWidth <= 375));
  await page.setViewportSize({ width: 1200, height: 820 });

  // Keyboard: the room link is reachable with Tab and shows its focus.
  await card(page).locator('.room-link').focus();
  const outline = await card(page).locator('.room-link').evaluate((node) => getComputedStyle(node).outlineStyle);
  assert(outline !== 'none', `a focused link shows its focus (outline ${outline})`);

  // The room: the newest page of history, then older pages as we scroll up.
  await page.keyboard.press('Enter');
  await until('the room open', async () => page.url().endsWith(`#/room/${SLUG}`));
  await until('the newest page of history', async () => (await page.locator('[data-event-id]').count()) === 50);
  assert((await page.textContent('#room-name')) === ROOM_NAME, 'the room name');
  await messageWithBody(page, `seed ${SEEDS}`).waitFor();
  await until('the room socket live', async () => (await page.getAttribute('#room-live', 'data-state')) === 'live');
  const reply = messageWithBody(page, 'a reply to the last seed');
  await until('the reply quotes its message', async () =>
    (await reply.locator('.quote').textContent()).includes(`seed ${SEEDS}`));
  await until('the thread reply names its root, the root counts it', async () =>
    (await messageWithBody(page, 'in the thread of seed 53').locator('.thread-mark').textContent()).includes('seed 53') &&
    (await messageWithBody(page, `seed ${SEEDS - 2}`).locator('.thread-count').textContent()) === '1 reply in thread');
  await until('the reaction counted', async () =>
    (await messageWithBody(page, `seed ${SEEDS - 1}`).locator('.reaction').textContent()) === '👍 1');
  assert(
    (await messageWithBody(page, `seed ${SEEDS}`).getAttribute('class')).includes('human'),
    'a person\'s message is styled as human',
  );
  const agent = messageWithBody(page, 'Я Софія, агентка міста.');
  assert((await agent.getAttribute('class')).includes('agent'), 'an agent\'s message is styled as an agent');
  assert((await agent.locator('.agent-badge').textContent()) === 'agent', 'an agent\'s message says so');
  const total = HISTORY;
  await page.$eval('#timeline', (node) => {
    node.scrollTop = 0;
  });
  await until(`all ${total} messages after scrolling up`, async () => (await page.locator('[data-event-id]').count()) === total);
  await page.locator('#history-start').waitFor({ state: 'visible' });
  const shown = await bodies(page);
  assert(shown[0] === 'seed 1', `the oldest message first (${shown[0]})`);
  assert(shown.indexOf(`seed ${SEEDS}`) > shown.indexOf('seed 2'), 'older above newer');
  assert(new Set(await page.$$eval('[data-event-id]', (n) => n.map((m) => m.dataset.eventId))).size === total, 'each message once');

  await audit(page, 'the room');

  // Sending from the page: Shift+Enter is a new line, Enter sends; the text stays text.
  const composer = page.getByRole('textbox', { name: 'Message' });
  const sentText = 'Hello from the page <b>not bold</b>\nsecond line';
  await composer.click();
  await composer.pressSequentially('Hello from the page <b>not bold</b>');
  await composer.press('Shift+Enter');
  await composer.pressSequentially('second line');
  await composer.press('Enter');
  const mine = messageWithBody(page, 'Hello from the page', { prefix: true });
  await until('my message on the page', async () => (await mine.locator('.body').textContent()) === sentText);
  assert((await mine.locator('.body b').count()) === 0, 'message text is never markup');
  // The socket may show the message before the send's answer empties the composer.
  await until('the composer emptied', async () => (await composer.inputValue()) === '');
  const sentId = await mine.getAttribute('data-event-id');
  await step('sent', { event_id: sentId, text: sentText });

  // A message from a Matrix client appears without a reload.
  const fromMatrix = await step('matrix-message');
  await messageWithBody(page, fromMatrix.text).waitFor({ timeout: 30000 });
  assert((await page.evaluate(() => window.cityTestMarker)) === 'not reloaded', 'the page was not reloaded');
  await until('the new message announced', async () => (await page.textContent('#announcer')).includes(fromMatrix.text));

  // React to it, edit and delete my own.
  const theirs = messageWithBody(page, fromMatrix.text);
  await theirs.getByText('React', { exact: true }).click();
  await theirs.getByRole('button', { name: 'React with 👍' }).click();
  await until('my reaction', async () =>
    (await theirs.locator('.reaction').textContent()) === '👍 1' &&
    (await theirs.locator('.reaction').getAttribute('aria-pressed')) === 'true');
  await mine.getByRole('button', { name: 'Edit' }).click();
  await until('the composer holds the text to edit', async () => (await composer.inputValue()) === sentText);
  await composer.fill('Hello again, edited');
  await composer.press('Enter');
  const edited = page.locator(`[data-event-id="${sentId}"]`);
  await until('the edit shown', async () =>
    (await edited.locator('.body').textContent()) === 'Hello again, edited' && (await edited.locator('.edited').isVisible()));
  await composer.fill('to be deleted');
  await composer.press('Enter');
  const doomed = messageWithBody(page, 'to be deleted');
  await doomed.waitFor();
  page.once('dialog', (dialog) => dialog.accept());
  await doomed.getByRole('button', { name: 'Delete' }).click();
  await until('the deleted mark', async () =>
    (await page.locator('.msg.redacted .body').allTextContents()).includes('Message deleted'));
  await page.$eval('#timeline', (node) => {
    node.scrollTop = node.scrollHeight;
  });
  await page.screenshot({ path: join(SHOTS, 'room.png') });

  // The room on a phone: nothing wider than the screen, the composer in reach.
  await page.setViewportSize({ width: 375, height: 740 });
  await until('the room fits 375 px', () => page.evaluate(() => document.documentElement.scrollWidth <= 375));
  assert(await composer.isVisible(), 'the composer is on screen at 375 px');
  if (process.env.MOBILE_SCREENSHOT) await page.screenshot({ path: process.env.MOBILE_SCREENSHOT });
  await page.setViewportSize({ width: 1200, height: 820 });

  // An error of the API is shown to the user: text over 16,000 characters is refused.
  await composer.fill('x'.repeat(16001));
  await composer.press('Enter');
  const alert = page.getByRole('alert');
  await until('the refusal shown', async () => (await alert.isVisible()) && (await alert.textContent()).includes('422'));
  assert((await composer.inputValue()).length === 16001, 'the refused text is kept to fix');
  await alert.getByRole('button', { name: 'Dismiss' }).click();
  await composer.fill('');

  // A picture attached from the page: its upload, then its thumbnail in the timeline,
  // opening the full size.
  const attach = page.getByLabel('Attach a file');
  await attach.setInputFiles({ name: 'city.png', mimeType: 'image/png', buffer: png(64, 48) });
  const picture = page.locator('.msg img.thumbnail[alt="city.png"]');
  await picture.waitFor({ timeout: 30000 });
  await until('the thumbnail loaded', () => picture.evaluate((img) => img.complete && img.naturalWidth > 0));
  const full = await picture.evaluate((img) => img.closest('a').getAttribute('href'));
  assert(full.startsWith('/api/messaging/media/') && !full.includes('thumbnail'), `the full size is linked (${full})`);
  await until('the upload bar gone', () => page.locator('#upload').isHidden());
  // A file over the bridge's limit is refused in the page, before it is sent.
  const { max_bytes: maxBytes } = await (await fetch(`${BRIDGE}/api/messaging/media/config`)).json();
  const shownBefore = await page.locator('[data-event-id]').count();
  await attach.setInputFiles({ name: 'huge.bin', mimeType: 'application/octet-stream', buffer: Buffer.alloc(maxBytes + 1) });
  await until('the size refusal shown', async () => (await alert.isVisible()) && (await alert.textContent()).includes('too large'));
  assert((await page.locator('#upload').isHidden()) && (await page.locator('[data-event-id]').count()) === shownBefore, 'nothing was sent');
  await alert.getByRole('button', { name: 'Dismiss' }).click();

  // The bridge restarts: the page notices, reconnects and shows what it missed.
  // The browser is kept offline until both missed messages are indexed, so they can only
  // come from reading the history `after` the newest message shown.
  await step('restart');
  await until('the page sees the socket go', async () => (await page.getAttribute('#room-live', 'data-state')) !== 'live', 30000);
  await context.setOffline(true);
  const missed = await step('offline');
  await context.setOffline(false);
  await until('live again', async () => (await page.getAttribute('#room-live', 'data-state')) === 'live', 60000);
  for (const text of missed.texts) {
    await until(`"${text}" after the reconnect`, async () => (await bodies(page)).includes(text), 60000);
  }
  assert((await page.evaluate(() => window.cityTestMarker)) === 'not reloaded', 'reconnected without a reload');
  const after = await bodies(page);
  for (const text of missed.texts) assert(after.filter((b) => b === text).length === 1, `"${text}" shown once`);

  // The user's channels beside the page: this room, read (it is open), live.
  const channel = page.locator(`#channel-list [data-channel-slug="${SLUG}"]`);
  await until('the room in the sidebar, read', async () =>
    (await channel.isVisible()) && (await channel.getAttribute('data-unread')) === '0' &&
    (await channel.locator('.unread-badge').isHidden()));
  assert((await channel.getAttribute('class')).includes('current'), 'the open room is marked in the sidebar');
  assert((await channel.locator('.channel-name').textContent()) === ROOM_NAME, 'the sidebar names the room');

  // Composing says so to Matrix clients; an emptied composer stops it.
  await composer.click();
  await composer.pressSequentially('thinking');
  await step('composing');
  await composer.fill('');
  await composer.dispatchEvent('input');

  // Away from the room, a message from a Matrix client that names the user: the badges
  // go up, live; opening the room reads it and they go back to zero.
  await page.locator('.back').click();
  await until('the city again', async () => !(await page.locator('#city').isHidden()));
  const mention = await step('unread');
  await until('an unread badge and a mention badge', async () =>
    (await channel.getAttribute('data-unread')) === '1' &&
    (await channel.locator('.unread-badge').textContent()) === '1' &&
    (await channel.getAttribute('data-mentions')) === '1' &&
    (await channel.locator('.mention-badge').isVisible()) &&
    (await channel.locator('.channel-last').textContent()).includes(mention.text.slice(0, 20)));
  await audit(page, 'the sidebar with badges');
  const inside = await page.evaluate(() => {
    const bar = document.getElementById('sidebar').getBoundingClientRect();
    return [...document.querySelectorAll('#channel-list .badge:not([hidden])')].every((b) => {
      const box = b.getBoundingClientRect();
      return box.width > 0 && box.left >= bar.left && box.right <= bar.right;
    });
  });
  assert(inside, 'the badges are inside the sidebar, not pushed out by a long last message');
  await page.setViewportSize({ width: 1100, height: 420 });
  await page.screenshot({ path: join(SHOTS, 'channels.png') });
  await page.setViewportSize({ width: 1200, height: 820 });
  await channel.locator('a').click();
  await until('the room open from the sidebar', async () => page.url().endsWith(`#/room/${SLUG}`));
  await messageWithBody(page, mention.text).waitFor();
  await until('the badges back to zero', async () =>
    (await channel.getAttribute('data-unread')) === '0' &&
    (await channel.locator('.unread-badge').isHidden()) &&
    (await channel.locator('.mention-badge').isHidden()));
  const plan = await step('read', { slug: SLUG });

  // Search: a message found with its match marked, opened in its room.
  await page.getByLabel('Search messages').fill('thread');
  await page.getByRole('button', { name: 'Search', exact: true }).click();
  const hit = page.locator('#search-results li').filter({ hasText: 'in the thread of seed 53' });
  await hit.waitFor();
  assert((await hit.locator('mark').first().textContent()).toLowerCase() === 'thread', 'the match is marked');
  await hit.locator('a').click();
  const found = messageWithBody(page, 'in the thread of seed 53');
  await until('the found message shown in its room', async () => (await found.getAttribute('class')).includes('flash'));

  // A private channel made with the form: the user is its admin, and opens it.
  await page.locator('summary', { hasText: 'New channel' }).click();
  await page.getByLabel('Name', { exact: true }).fill(plan.name);
  await page.getByRole('button', { name: 'Create' }).click();
  await until('the new channel open', async () => /#\/room\/[^/?]+$/.test(page.url()) && !page.url().endsWith(`/${SLUG}`));
  const channelSlug = decodeURIComponent(page.url().split('#/room/')[1]);
  await until('the new channel named', async () => (await page.textContent('#room-name')) === plan.name);
  const members = page.locator('#room-tools');
  await members.locator('summary').click();
  await until('the user listed as the admin', async () =>
    (await members.locator(`[data-member-id="${plan.me}"]`).textContent()).includes('admin'));

  // A message pinned from its button shows at the top of the channel, for Matrix too.
  const channelComposer = page.getByRole('textbox', { name: 'Message' });
  await channelComposer.fill('pin me, please');
  await channelComposer.press('Enter');
  const pinMe = messageWithBody(page, 'pin me, please');
  await pinMe.waitFor();
  await pinMe.getByRole('button', { name: 'Pin' }).click();
  await until('the pin at the top', async () =>
    (await page.locator('#pins').isVisible()) && (await page.locator('#pin-list li').textContent()) === 'pin me, please');
  await until('the message marked pinned', async () =>
    (await pinMe.getAttribute('class')).includes('pinned') && (await pinMe.getByRole('button', { name: 'Unpin' }).count()) === 1);

  // Inviting someone from the members panel.
  await page.getByLabel('Invite (user:name or agent:name)').fill(plan.invitee);
  await page.getByRole('button', { name: 'Invite', exact: true }).click();
  await until('the invitation made', async () => (await page.textContent('#invite-status')).includes(plan.invitee));
  await until('the invitee listed as invited', async () =>
    (await members.locator(`[data-member-id="${plan.invitee}"]`).textContent()).includes('invited'));
  await audit(page, 'a channel with its pins and members');
  await page.screenshot({ path: join(SHOTS, 'messenger.png') });
  await step('messenger', { slug: channelSlug, pinned: await pinMe.getAttribute('data-event-id') });

  await context.close();

  // A Ukrainian browser gets Ukrainian by default, and signs in with the form; the
  // composer is "Повідомлення".
  const uk = await launch('uk-UA');
  await uk.page.goto(`${BRIDGE}/`);
  const tokenField = uk.page.getByLabel('Токен (JWT)');
  await tokenField.waitFor();
  assert((await uk.page.getAttribute('html', 'lang')) === 'uk', 'Ukrainian for a uk-UA browser');
  await audit(uk.page, 'the sign-in form');
  await tokenField.fill('not a token');
  await uk.page.getByRole('button', { name: 'Увійти' }).click();
  await until('a bad token refused', async () =>
    (await uk.page.getByRole('alert').textContent()).includes('не дійсний токен'));
  await tokenField.fill(TOKEN);
  await uk.page.getByRole('button', { name: 'Увійти' }).click();
  await until('signed in: the form gone, presence live', async () =>
    (await uk.page.locator('#sign-in').isHidden()) && (await uk.page.getAttribute('#city-live', 'data-state')) === 'live');
  await uk.page.locator(`[data-room-slug="${SLUG}"] .room-link`).click();
  await uk.page.getByRole('textbox', { name: 'Повідомлення' }).waitFor();
  await until('the history in the Ukrainian page', async () => (await uk.page.locator('[data-event-id]').count()) > 0);
  assert((await uk.page.textContent('.back')) === '← Місто', 'Ukrainian texts');
  await uk.context.close();

  assert(pageErrors.length === 0, `no script errors in the page: ${pageErrors.join('; ')}`);
  log(`the page user ${PAGE_USER} saw it all`);
  console.log('DONE');
}

try {
  await main();
  for (const profile of profiles) rmSync(profile, { recursive: true, force: true });
  process.exit(0);
} catch (error) {
  log(`FAIL ${error.stack ?? error}`);
  process.exit(1);
}
