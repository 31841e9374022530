// The panels around a room and the sidebar's tools: the room's pins at its top, its members
// (who is online, invite, leave), a form to create a channel, and search whose results
// open the message in its room. Text only ever goes in as text nodes.

import { ApiError, api } from './api.js';
import { t } from './i18n.js';

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

let current = null; // { slug, pins, members, jump, onError }

/** Opens the panels of the room `slug`; `jump(eventId)` shows a message in the timeline. */
export function openPanels(slug, { jump, onError, me }) {
  current = { slug, pins: { pinned: [], messages: [] }, members: [], jump, onError, me };
  $('room-tools').hidden = false;
  $('pins').hidden = true;
  $('member-list').replaceChildren();
  loadPins();
  loadMembers();
}

export function closePanels() {
  current = null;
  $('pins').hidden = true;
  $('room-tools').hidden = true;
}

function base() {
  return `/api/messaging/channels/${encodeURIComponent(current.slug)}`;
}

// ---- pins --------------------------------------------------------------------------

async function loadPins() {
  const mine = current;
  try {
    const pins = await api('GET', `${base()}/pins`);
    if (current !== mine) return;
    current.pins = pins;
    renderPins();
  } catch (error) {
    if (current === mine) current.onError(error);
  }
}

/** A `pins.updated` frame of the open room's socket. */
export function onPinsFrame() {
  if (current) loadPins();
}

/** Whether `eventId` is pinned in the open room. */
export function isPinned(eventId) {
  return Boolean(current?.pins.pinned.includes(eventId));
}

/** Pins or unpins a message of the open room as the user. */
export async function togglePin(message) {
  if (!current) return;
  const pinned = isPinned(message.matrix_event_id);
  try {
    current.pins = await api(pinned ? 'DELETE' : 'PUT', `${base()}/pins/${encodeURIComponent(message.matrix_event_id)}`);
    renderPins();
  } catch (error) {
    current.onError(error.status === 403 ? new Error(t('mayNotPin')) : error);
  }
}

function renderPins() {
  const { messages } = current.pins;
  $('pins').hidden = messages.length === 0;
  $('pins-title').textContent = t('pinned', messages.length);
  $('pin-list').replaceChildren(
    ...messages.map((message) =>
      el(
        'li',
        { dataset: { eventId: message.matrix_event_id } },
        el('button', { type: 'button', class: 'link', onclick: () => current.jump(message.matrix_event_id) }, message.content_preview || t('aFile')),
      ),
    ),
  );
}

// ---- members -----------------------------------------------------------------------

async function loadMembers() {
  const mine = current;
  try {
    const { members } = await api('GET', `${base()}/members`);
    if (current !== mine) return;
    current.members = members;
    renderMembers();
  } catch (error) {
    if (current === mine) current.onError(error);
  }
}

/** Someone joined or left the open room: read its members again. */
export function membersChanged() {
  if (current) loadMembers();
}

function renderMembers() {
  const shown = current.members.filter((m) => m.membership === 'join' || m.membership === 'invite');
  $('members-title').textContent = t('members', shown.filter((m) => m.membership === 'join').length);
  $('member-list').replaceChildren(
    ...shown.map((member) => {
      const online = member.presence === 'online';
      return el(
        'li',
        { dataset: { memberId: member.member_id, presence: member.presence ?? 'unknown' } },
        el('span', { class: online ? 'dot' : 'dot off', 'aria-hidden': 'true' }),
        el('span', { class: 'member-name' }, member.display_name || member.member_id),
        online ? el('span', { class: 'visually-hidden' }, t('isOnline')) : null,
        member.membership === 'invite' ? el('span', { class: 'badge-note' }, t('invited')) : null,
        member.role !== 'member' ? el('span', { class: 'badge-note' }, t(`role_${member.role}`)) : null,
      );
    }),
  );
}

async function invite(event) {
  event.preventDefault();
  if (!current) return;
  const input = $('invite-input');
  const raw = input.value.trim();
  if (!raw) return;
  const memberId = raw.includes(':') ? raw : `user:${raw}`;
  try {
    await api('POST', `${base()}/members`, { member_id: memberId });
    input.value = '';
    $('invite-status').textContent = t('invitedSomeone', memberId);
    // The list follows Synapse's push of the invitation: read it until it shows.
    const mine = current;
    for (let tries = 0; tries < 10 && current === mine; tries += 1) {
      await loadMembers();
      if (current?.members.some((m) => m.member_id === memberId)) break;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  } catch (error) {
    current.onError(error.status === 403 ? new Error(t('mayNotInvite')) : error);
  }
}

async function leave() {
  if (!current || !window.confirm(t('leaveConfirm'))) return;
  try {
    await api('DELETE', `${base()}/members/${encodeURIComponent(current.me)}`);
    location.hash = '#/';
  } catch (error) {
    current.onError(error);
  }
}

// ---- creating a channel ------------------------------------------------------------

async function createChannel(event) {
  event.preventDefault();
  const name = $('new-channel-name').value.trim();
  if (!name) return;
  const visibility = $('new-channel-private').checked ? 'private' : 'public';
  const microdao = $('new-channel-microdao').value.trim();
  const body = { name, visibility };
  if (microdao) body.microdao_id = microdao;
  try {
    const channel = await api('POST', '/api/messaging/channels', body);
    $('new-channel-form').reset();
    location.hash = `#/room/${encodeURIComponent(channel.slug)}`;
  } catch (error) {
    const message =
      error instanceof ApiError && error.code === 'admin_required' ? t('cityRoomsByAdmins') : error.message;
    $('new-channel-status').textContent = message;
  }
}

// ---- search ------------------------------------------------------------------------

/** The server's highlight (HTML-escaped text with matches in `<b>`), as text and `<mark>`s. */
function highlighted(highlight) {
  const decode = (s) =>
    s.replaceAll('&lt;', '<').replaceAll('&gt;', '>').replaceAll('&quot;', '"').replaceAll('&amp;', '&');
  return highlight.split(/(<b>.*?<\/b>)/).map((part) => {
    const match = part.match(/^<b>(.*)<\/b>$/);
    return match ? el('mark', {}, decode(match[1])) : document.createTextNode(decode(part));
  });
}

async function search(event) {
  event.preventDefault();
  const q = $('search-input').value.trim();
  const list = $('search-results');
  if (q.length < 2) {
    list.replaceChildren(el('li', { class: 'empty' }, t('searchTooShort')));
    return;
  }
  try {
    const { results } = await api('GET', `/api/messaging/search?q=${encodeURIComponent(q)}&limit=20`);
    list.replaceChildren(
      ...(results.length
        ? results.map((hit) =>
            el(
              'li',
              { dataset: { eventId: hit.matrix_event_id } },
              el(
                'a',
                {
                  href: `#/room/${encodeURIComponent(hit.channel_id.replace(/^room_city_/, ''))}?event=${encodeURIComponent(hit.matrix_event_id)}`,
                },
                el('span', { class: 'result-channel' }, hit.channel_id.replace(/^room_city_/, '#')),
                ' ',
                el('span', { class: 'result-text' }, ...highlighted(hit.highlight)),
              ),
            ),
          )
        : [el('li', { class: 'empty' }, t('noResults'))]),
    );
  } catch (error) {
    list.replaceChildren(el('li', { class: 'empty' }, error.message));
  }
}

/** Wires the forms once, at start. */
export function startPanels() {
  $('invite-form').addEventListener('submit', invite);
  $('leave').addEventListener('click', leave);
  $('new-channel-form').addEventListener('submit', createChannel);
  $('search-form').addEventListener('submit', search);
}
