// The live city page: the city's rooms with who is online and typing, and a room with its
// history, live messages and a composer. Message text only ever goes in as text nodes.

import { ApiError, LiveSocket, api, claims, setToken, token } from './api.js';
import {
  composing,
  markRead,
  renderSidebar,
  setCurrentChannel,
  startSidebar,
  stopSidebar,
  stoppedComposing,
} from './channels.js';
import { LANGUAGES, language, setLanguage, t, translateDocument } from './i18n.js';
import { formatSize, mediaConfig, mediaUrl, upload } from './media.js';
import { closePanels, isPinned, membersChanged, onPinsFrame, openPanels, startPanels, togglePin } from './panels.js';

const PAGE = 50;
const ACTIVE_FOR_MS = 5 * 60 * 1000;
const QUICK_REACTIONS = ['👍', '❤️', '😂', '🎉', '👀'];

const $ = (id) => document.getElementById(id);

/** An element with attributes and children; strings become text nodes, never HTML. */
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(typeof child === 'string' ? document.createTextNode(child) : child);
  }
  return node;
}

// ---- errors -------------------------------------------------------------------------

function showError(error) {
  console.error(error);
  let text;
  if (error instanceof ApiError) {
    if (error.status === 0) text = t('networkError');
    else if (error.status === 401) {
      text = `${t('errorPrefix')} 401 ${error.message}. ${t('badToken')}`;
    } else text = `${t('errorPrefix')} ${error.status}: ${error.message}`;
  } else text = `${t('errorPrefix')}: ${error.message ?? error}`;
  $('error-text').textContent = text;
  $('error').hidden = false;
}

function clearError() {
  $('error').hidden = true;
  $('error-text').textContent = '';
}

// ---- identity -----------------------------------------------------------------------

let me = null;

function signedIn() {
  me = claims(token());
  if (!me && token()) setToken(null);
  $('sign-out').hidden = !me;
  return me;
}

function isMine(message) {
  if (!me) return false;
  if (me.matrix_user_id) return message.sender_matrix_id === me.matrix_user_id;
  return message.sender_id === me.sub;
}

function senderName(message) {
  if (isMine(message)) return t('you');
  const id = message.sender_id || message.sender_matrix_id || '';
  return id.replace(/^(user|agent):/, '');
}

/** `?token=` → this tab's storage, and out of the address bar (and history). */
function takeTokenFromUrl() {
  const url = new URL(location.href);
  const value = url.searchParams.get('token');
  if (value === null) return;
  url.searchParams.delete('token');
  history.replaceState(null, '', url.pathname + url.search + url.hash);
  if (claims(value)) setToken(value);
  else showError(new Error(t('badToken')));
}

// ---- the city -----------------------------------------------------------------------

const city = {
  rooms: [],
  presence: new Map(),
  socket: null,
};

/** The homeserver's name, from any room that has its alias already, or from the JWT. */
function serverName() {
  const aliases = [...city.rooms.map((r) => r.matrix_room_alias), room?.info?.matrix_room_alias, me?.matrix_user_id];
  const known = aliases.find((a) => a && a.includes(':'));
  return known ? known.slice(known.indexOf(':') + 1) : null;
}

/**
 * `https://matrix.to/#/<alias>`. A room whose Matrix room does not exist yet still has its
 * alias: joining `#city_<slug>` makes the bridge create it.
 */
function elementLink(slug, alias) {
  const server = serverName();
  const target = alias ?? (server ? `#city_${slug}:${server}` : null);
  return target ? `https://matrix.to/#/${target}` : null;
}

function isActive(slug) {
  const live = city.presence.get(slug) ?? {};
  if ((live.typing_count ?? 0) > 0) return true;
  const last = live.last_event_ts ?? null;
  return last !== null && Date.now() - last < ACTIVE_FOR_MS;
}

function roomCard(room) {
  const live = city.presence.get(room.slug) ?? {};
  const online = live.online_count ?? room.members_online ?? 0;
  const typing = live.typing_count ?? 0;
  const active = isActive(room.slug);
  const link = elementLink(room.slug, live.matrix_room_alias ?? room.matrix_room_alias);
  const titleId = `room-title-${room.slug}`;
  return el(
    'li',
    {
      class: `card${active ? ' active' : ''}`,
      'aria-labelledby': titleId,
      dataset: {
        roomSlug: room.slug,
        onlineCount: String(online),
        typingCount: String(typing),
        active: String(active),
      },
    },
    el('h2', { id: titleId }, el('a', { href: `#/room/${encodeURIComponent(room.slug)}`, class: 'room-link' }, room.name)),
    room.description ? el('p', { class: 'description' }, room.description) : null,
    el(
      'p',
      { class: 'meta' },
      el('span', { class: 'online' }, el('span', { class: 'dot', 'aria-hidden': 'true' }), t('online', online)),
      el('span', { class: 'typing-badge', hidden: typing === 0 }, t('typing', typing)),
      active && typing === 0 ? el('span', { class: 'active-badge' }, t('active')) : null,
    ),
    link
      ? el('a', { class: 'element', href: link, target: '_blank', rel: 'noopener noreferrer' }, t('openInElement'))
      : null,
  );
}

function renderCity() {
  const list = $('rooms');
  const focused = document.activeElement?.closest?.('[data-room-slug]')?.dataset.roomSlug;
  list.replaceChildren(...city.rooms.map(roomCard));
  if (city.rooms.length === 0) list.append(el('li', { class: 'empty' }, t('noRooms')));
  if (focused) list.querySelector(`[data-room-slug="${CSS.escape(focused)}"] .room-link`)?.focus();
}

function updateCard(slug) {
  const old = $('rooms').querySelector(`[data-room-slug="${CSS.escape(slug)}"]`);
  const room = city.rooms.find((r) => r.slug === slug);
  if (!old || !room) return;
  const hadFocus = old.contains(document.activeElement) ? document.activeElement.className : null;
  const card = roomCard(room);
  old.replaceWith(card);
  if (hadFocus) card.querySelector(`.${hadFocus.split(' ')[0]}`)?.focus();
}

async function loadRooms() {
  const body = await api('GET', '/api/city/rooms');
  city.rooms = body.rooms ?? body ?? [];
  renderCity();
}

function onPresence(frame) {
  if (frame.type === 'snapshot') {
    for (const room of frame.rooms ?? []) {
      const known = city.presence.get(room.room_slug) ?? {};
      city.presence.set(room.room_slug, { ...known, ...room });
    }
    if ((frame.rooms ?? []).some((r) => !city.rooms.find((room) => room.slug === r.room_slug))) {
      loadRooms().catch(showError);
    } else renderCity();
  } else if (frame.type === 'room.presence') {
    city.presence.set(frame.room_slug, frame);
    if (!city.rooms.find((room) => room.slug === frame.room_slug)) loadRooms().catch(showError);
    else updateCard(frame.room_slug);
  }
}

function setLive(node, state) {
  node.dataset.state = state;
  node.textContent = t('live')[state] ?? '';
}

/** A socket that dropped may have lost its token: an expired one asks to sign in again. */
function onSocketState(node, state) {
  setLive(node, state);
  if (state === 'removed') {
    showError(new Error(t('removed')));
    return;
  }
  if (state === 'offline' && token() && !claims(token())) {
    setToken(null);
    stopPresence();
    stopSidebar();
    closeRoom();
    showError(new Error(t('badToken')));
    route();
  }
}

function startPresence() {
  if (city.socket || !me) return;
  city.socket = new LiveSocket(() => `/ws/city/presence?token=${encodeURIComponent(token())}`, {
    onFrame: onPresence,
    onState: (state) => onSocketState($('city-live'), state),
  });
  city.socket.start();
}

function stopPresence() {
  city.socket?.stop();
  city.socket = null;
}

// ---- a room -------------------------------------------------------------------------

let room = null;

function newRoomState(slug) {
  return {
    slug,
    info: null,
    messages: new Map(),
    order: [],
    olderCursor: undefined,
    loadingOlder: false,
    socket: null,
    context: null,
    catchingUp: null,
    typing: [],
  };
}

function messagePath(eventId = '') {
  const base = `/api/messaging/channels/${encodeURIComponent(room.slug)}/messages`;
  return eventId ? `${base}/${encodeURIComponent(eventId)}` : base;
}

function snippet(message) {
  if (!message) return t('unknownMessage');
  if (message.redacted) return `${senderName(message)}: ${t('deleted')}`;
  const text = (message.content_preview || '').replace(/\s+/g, ' ');
  return `${senderName(message)}: ${text.length > 80 ? `${text.slice(0, 80)}…` : text}`;
}

function threadReplies(eventId) {
  let n = 0;
  for (const message of room.messages.values()) if (message.thread_root === eventId) n += 1;
  return n;
}

function messageItem(message) {
  const mine = isMine(message);
  const agent = message.sender_type === 'agent';
  const time = new Date(message.created_at);
  const replies = threadReplies(message.matrix_event_id);
  const quoted = message.reply_to && message.reply_to !== message.thread_root ? room.messages.get(message.reply_to) : null;
  const actions = [];
  if (!message.redacted && me) {
    actions.push(el('button', { type: 'button', dataset: { action: 'reply' }, onclick: () => setContext('reply', message) }, t('reply')));
    actions.push(
      el('button', { type: 'button', dataset: { action: 'thread' }, onclick: () => setContext('thread', message) }, t('thread')),
    );
    actions.push(
      el(
        'details',
        { class: 'react-menu' },
        el('summary', { dataset: { action: 'react' } }, t('react')),
        el(
          'span',
          { class: 'quick-reactions' },
          QUICK_REACTIONS.map((key) =>
            el('button', { type: 'button', 'aria-label': t('reactWith', key), onclick: () => toggleReaction(message, key) }, key),
          ),
        ),
      ),
    );
    actions.push(
      el(
        'button',
        {
          type: 'button',
          dataset: { action: 'pin' },
          onclick: async () => {
            await togglePin(message);
            renderMessage(message.matrix_event_id);
          },
        },
        isPinned(message.matrix_event_id) ? t('unpin') : t('pin'),
      ),
    );
    if (mine) {
      actions.push(el('button', { type: 'button', dataset: { action: 'edit' }, onclick: () => setContext('edit', message) }, t('edit')));
      actions.push(
        el('button', { type: 'button', class: 'danger', dataset: { action: 'delete' }, onclick: () => deleteMessage(message) }, t('delete')),
      );
    }
  }
  return el(
    'li',
    {
      class: [
        'msg',
        agent ? 'agent' : 'human',
        mine ? 'mine' : '',
        message.redacted ? 'redacted' : '',
        message.thread_root ? 'in-thread' : '',
        isPinned(message.matrix_event_id) ? 'pinned' : '',
      ]
        .filter(Boolean)
        .join(' '),
      dataset: { eventId: message.matrix_event_id, senderType: message.sender_type },
    },
    el(
      'p',
      { class: 'msg-head' },
      el('span', { class: 'sender' }, senderName(message)),
      agent ? el('span', { class: 'agent-badge' }, t('agent')) : null,
      el('time', { datetime: message.created_at, title: time.toLocaleString(language()) }, time.toLocaleTimeString(language(), { hour: '2-digit', minute: '2-digit' })),
      message.edited_at && !message.redacted ? el('span', { class: 'edited' }, t('edited')) : null,
    ),
    message.thread_root
      ? el('p', { class: 'thread-mark' }, t('threadOf', snippet(room.messages.get(message.thread_root))))
      : null,
    message.reply_to && message.reply_to !== message.thread_root
      ? el('blockquote', { class: 'quote' }, el('span', { class: 'visually-hidden' }, `${t('quoteOf', '')} `), snippet(quoted))
      : null,
    message.redacted
      ? el('p', { class: 'body deleted' }, t('deleted'))
      : message.media
        ? mediaBody(message)
        : el('p', { class: `body${message.msgtype === 'm.emote' ? ' emote' : ''}` }, message.content_preview),
    message.reactions?.length && !message.redacted
      ? el(
          'ul',
          { class: 'reactions' },
          message.reactions.map((r) =>
            el(
              'li',
              {},
              el(
                'button',
                {
                  type: 'button',
                  class: 'reaction',
                  'aria-pressed': String(Boolean(r.mine)),
                  'aria-label': t('reactionCount', r.key, r.count, r.mine),
                  dataset: { key: r.key, count: String(r.count) },
                  disabled: !me,
                  onclick: () => toggleReaction(message, r.key),
                },
                `${r.key} ${r.count}`,
              ),
            ),
          ),
        )
      : null,
    replies ? el('p', { class: 'thread-count' }, t('threadReplies', replies)) : null,
    actions.length ? el('div', { class: 'actions' }, actions) : null,
  );
}

/** A file message: an image as a thumbnail opening the full size, any other file as a link
 * with its name, type and size; the caption (when it is not just the name) below. */
function mediaBody(message) {
  const media = message.media;
  const name = media.name || message.content_preview || 'file';
  const caption = message.content_preview && message.content_preview !== name ? message.content_preview : null;
  const shown =
    message.msgtype === 'm.image'
      ? el(
          'a',
          { href: mediaUrl(media), target: '_blank', rel: 'noopener noreferrer', 'aria-label': t('openImage', name) },
          el('img', {
            class: 'thumbnail',
            src: mediaUrl(media, 320),
            alt: name,
            loading: 'lazy',
            width: media.width ?? undefined,
            height: media.height ?? undefined,
          }),
        )
      : el(
          'a',
          { class: 'file', href: mediaUrl(media), download: name, 'aria-label': t('downloadFile', name) },
          name,
          el('span', { class: 'file-meta' }, [media.mimetype, formatSize(media.size)].filter(Boolean).join(', ')),
        );
  return el('div', { class: 'body media' }, shown, caption ? el('p', { class: 'caption' }, caption) : null);
}

function renderMessage(eventId) {
  const message = room.messages.get(eventId);
  const list = $('messages');
  const old = list.querySelector(`[data-event-id="${CSS.escape(eventId)}"]`);
  const item = messageItem(message);
  if (old) {
    const action = old.contains(document.activeElement) ? document.activeElement.dataset?.action : null;
    old.replaceWith(item);
    if (action) item.querySelector(`[data-action="${action}"]`)?.focus();
    return;
  }
  const index = room.order.indexOf(eventId);
  const next = room.order.slice(index + 1).map((id) => list.querySelector(`[data-event-id="${CSS.escape(id)}"]`)).find(Boolean);
  list.insertBefore(item, next ?? null);
}

function renderAllMessages() {
  $('messages').replaceChildren(...room.order.map((id) => messageItem(room.messages.get(id))));
}

/** Merges a message in (new or changed); keeps what only this page knows (`mine`). */
function upsert(message, { at = 'end' } = {}) {
  const id = message.matrix_event_id;
  const known = room.messages.get(id);
  if (known && message.reactions) {
    for (const r of message.reactions) {
      const before = known.reactions?.find((k) => k.key === r.key);
      if (before && !r.mine && before.mine && r.count >= before.count) r.mine = true;
    }
  }
  room.messages.set(id, message);
  if (!known) {
    if (at === 'start') room.order.unshift(id);
    else room.order.push(id);
  }
  renderMessage(id);
  // What refers to it shows its snippet and thread count.
  for (const other of [message.thread_root, message.reply_to]) {
    if (other && room.messages.has(other) && other !== id) renderMessage(other);
  }
  for (const [otherId, other] of room.messages) {
    if (otherId !== id && (other.reply_to === id || other.thread_root === id)) renderMessage(otherId);
  }
  return !known;
}

function nearBottom() {
  const timeline = $('timeline');
  return timeline.scrollHeight - timeline.scrollTop - timeline.clientHeight < 120;
}

function scrollToBottom() {
  const timeline = $('timeline');
  timeline.scrollTop = timeline.scrollHeight;
}

function announce(message) {
  if (isMine(message)) return;
  $('announcer').textContent = t('newMessage', senderName(message), message.content_preview);
}

function newestCursor() {
  for (let i = room.order.length - 1; i >= 0; i -= 1) {
    const cursor = room.messages.get(room.order[i])?.cursor;
    if (cursor) return cursor;
  }
  return null;
}

async function loadOlder() {
  if (!room || room.loadingOlder || room.olderCursor === null) return;
  const current = room;
  current.loadingOlder = true;
  $('older').textContent = t('loading');
  try {
    const query = new URLSearchParams({ limit: String(PAGE) });
    if (current.olderCursor) query.set('before', current.olderCursor);
    const page = await api('GET', `${messagePath()}?${query}`);
    if (room !== current) return;
    const timeline = $('timeline');
    const first = current.olderCursor === undefined;
    const fromBottom = timeline.scrollHeight - timeline.scrollTop;
    for (const message of page.messages) {
      if (!current.messages.has(message.matrix_event_id)) upsert(message, { at: 'start' });
    }
    current.olderCursor = page.next_cursor ?? null;
    $('older').hidden = current.olderCursor === null;
    $('history-start').hidden = current.olderCursor !== null;
    if (first) scrollToBottom();
    else timeline.scrollTop = timeline.scrollHeight - fromBottom;
  } catch (error) {
    showError(error);
  } finally {
    current.loadingOlder = false;
    $('older').textContent = t('loadOlder');
  }
}

/** What was sent while the socket was away: pages `after` the newest message shown. */
async function catchUp() {
  const current = room;
  if (current.catchingUp) return current.catchingUp;
  current.catchingUp = (async () => {
    let cursor = newestCursor();
    const stick = nearBottom();
    if (!cursor) {
      // Nothing shown yet: the newest page is what there is to catch up on.
      const page = await api('GET', `${messagePath()}?${new URLSearchParams({ limit: String(PAGE) })}`);
      if (room !== current) return;
      for (const message of [...page.messages].reverse()) {
        if (upsert(message)) announce(message);
      }
      if (stick) scrollToBottom();
      return;
    }
    for (;;) {
      const page = await api('GET', `${messagePath()}?${new URLSearchParams({ limit: '100', after: cursor })}`);
      if (room !== current) return;
      for (const message of [...page.messages].reverse()) {
        if (upsert(message)) announce(message);
      }
      if (!page.next_cursor) break;
      cursor = page.next_cursor;
    }
    if (stick) scrollToBottom();
    markNewestRead();
  })()
    .catch(showError)
    .finally(() => {
      current.catchingUp = null;
    });
  return current.catchingUp;
}

function onChannelFrame(frame) {
  // A frame whose message was too large for the bus names it only: read it from the API.
  if (frame.type === 'resync' || frame.truncated) {
    catchUp();
    return;
  }
  if (frame.type === 'typing') {
    room.typing = (frame.user_ids ?? []).filter((id) => !me || id !== me.matrix_user_id);
    renderTyping();
    return;
  }
  if (frame.type === 'pins.updated') {
    onPinsFrame();
    setTimeout(renderAllMessages, 300);
    return;
  }
  const message = frame.message;
  if (!message || message.channel_id !== room.info?.id && message.channel_id !== `room_city_${room.slug}`) return;
  const stick = nearBottom();
  const added = upsert(message);
  if (added && frame.type === 'message.created') {
    announce(message);
    markNewestRead();
  }
  if (added && stick) scrollToBottom();
}

/** The newest message of the open room is seen (the page is shown): a read receipt. */
function markNewestRead() {
  if (!room || !me || document.visibilityState !== 'visible') return;
  markRead(room.slug, room.order[room.order.length - 1]);
}

function renderTyping() {
  const names = room.typing.map((id) => id.replace(/^@/, '').split(':')[0]);
  $('room-typing').textContent = names.length ? t('someoneTyping', names) : '';
}

function setContext(mode, message) {
  room.context = { mode, message };
  const text = $('message');
  if (mode === 'edit') {
    text.value = message.content_preview;
    $('composer-context-text').textContent = t('editing');
  } else {
    $('composer-context-text').textContent =
      mode === 'reply' ? t('replyingTo', senderName(message)) : t('inThreadOf', senderName(message));
  }
  $('composer-context').hidden = false;
  $('composer').querySelector('button[type=submit]').textContent = mode === 'edit' ? t('save') : t('send');
  text.focus();
}

function clearContext() {
  if (room) room.context = null;
  $('composer-context').hidden = true;
  $('composer-context-text').textContent = '';
  $('composer').querySelector('button[type=submit]').textContent = t('send');
}

async function submitComposer() {
  const textarea = $('message');
  const text = textarea.value;
  if (!room || !text.trim()) return;
  const context = room.context;
  textarea.disabled = true;
  try {
    let message;
    if (context?.mode === 'edit') {
      message = await api('PATCH', messagePath(context.message.matrix_event_id), { text });
    } else {
      const body = { text };
      if (context?.mode === 'reply') {
        body.reply_to = context.message.matrix_event_id;
        if (context.message.thread_root) body.thread_root = context.message.thread_root;
      }
      if (context?.mode === 'thread') body.thread_root = context.message.thread_root ?? context.message.matrix_event_id;
      message = await api('POST', messagePath(), body, { idempotencyKey: crypto.randomUUID() });
    }
    if (message?.matrix_event_id) upsert(message);
    textarea.value = '';
    stoppedComposing();
    // Speaking in a room is having read it.
    markNewestRead();
    clearContext();
    if (context?.mode !== 'edit') scrollToBottom();
    clearError();
  } catch (error) {
    showError(error);
  } finally {
    textarea.disabled = false;
    textarea.focus();
  }
}

/** Sends `file` to the room (the composer's text as its caption), showing its progress; a
 * file over the bridge's limit is refused here, before a byte is sent. */
async function sendFile(file) {
  if (!room || !me || !file) return;
  const current = room;
  const name = file.name || 'file';
  try {
    const { max_bytes: max } = await mediaConfig();
    if (file.size > max) {
      showError(new Error(t('fileTooLarge', name, formatSize(max))));
      return;
    }
  } catch (error) {
    showError(error);
    return;
  }
  const textarea = $('message');
  const context = current.context?.mode === 'edit' ? null : current.context;
  const fields = { text: textarea.value.trim() ? textarea.value : undefined };
  if (context?.mode === 'reply') {
    fields.reply_to = context.message.matrix_event_id;
    fields.thread_root = context.message.thread_root ?? undefined;
  }
  if (context?.mode === 'thread') fields.thread_root = context.message.thread_root ?? context.message.matrix_event_id;
  const progress = $('upload-progress');
  progress.value = 0;
  $('upload-label').textContent = t('uploading', name);
  $('upload').hidden = false;
  try {
    const message = await upload(current.slug, file, fields, (fraction) => {
      progress.value = fraction;
    });
    if (room === current && message?.matrix_event_id) {
      upsert(message);
      if (fields.text) textarea.value = '';
      if (context) clearContext();
      scrollToBottom();
    }
    clearError();
  } catch (error) {
    showError(error);
  } finally {
    $('upload').hidden = true;
  }
}

async function toggleReaction(message, key) {
  const current = room.messages.get(message.matrix_event_id) ?? message;
  const mine = current.reactions?.find((r) => r.key === key)?.mine;
  try {
    const path = `${messagePath(message.matrix_event_id)}/reactions`;
    const updated = mine
      ? await api('DELETE', `${path}/${encodeURIComponent(key)}`)
      : await api('POST', path, { key });
    if (updated?.matrix_event_id) {
      room.messages.delete(updated.matrix_event_id);
      room.messages.set(updated.matrix_event_id, updated);
      renderMessage(updated.matrix_event_id);
    }
  } catch (error) {
    showError(error);
  }
}

async function deleteMessage(message) {
  if (!window.confirm(t('confirmDelete'))) return;
  try {
    const updated = await api('DELETE', messagePath(message.matrix_event_id));
    if (updated?.matrix_event_id) upsert(updated);
    else upsert({ ...message, redacted: true, content_preview: '' });
  } catch (error) {
    showError(error);
  }
}

async function openRoom(slug) {
  closeRoom();
  room = newRoomState(slug);
  const current = room;
  $('messages').replaceChildren();
  $('room-typing').textContent = '';
  $('older').hidden = false;
  $('history-start').hidden = true;
  $('room-name').textContent = slug;
  $('room-description').textContent = '';
  $('timeline').setAttribute('aria-label', t('messagesLabel'));
  clearContext();
  try {
    // Signed in, a channel as the messaging API shows it (private ones too, to members);
    // else a public city room.
    current.info = me
      ? await api('GET', `/api/messaging/channels/${encodeURIComponent(slug)}`)
      : await api('GET', `/api/city/rooms/${encodeURIComponent(slug)}`);
  } catch (error) {
    if (error.status === 404) showError(new Error(t('roomNotFound')));
    else showError(error);
    return;
  }
  if (room !== current) return;
  $('room-name').textContent = current.info.name;
  document.title = `${current.info.name} — DAARION.city`;
  $('room-description').textContent = current.info.description ?? '';
  if (city.rooms.length === 0 && !current.info.matrix_room_alias) await loadRooms().catch(() => {});
  const link = elementLink(slug, current.info.matrix_room_alias);
  $('room-element').hidden = !link;
  if (link) $('room-element').href = link;
  if (!me) {
    $('older').hidden = true;
    $('messages').append(el('li', { class: 'empty' }, t('signInToTalk')));
    return;
  }
  await loadOlder();
  if (room !== current) return;
  openPanels(slug, { jump: jumpTo, onError: showError, me: me.sub });
  markNewestRead();
  current.socket = new LiveSocket(
    () => `/ws/messaging/${encodeURIComponent(slug)}?token=${encodeURIComponent(token())}`,
    {
      onFrame: onChannelFrame,
      onState: (state) => onSocketState($('room-live'), state),
      // Subscribed now: anything indexed since the newest message shown is read once.
      onOpen: () => catchUp(),
    },
  );
  current.socket.start();
}

/** Shows the message `eventId` of the open room: older pages are read until it is there. */
async function jumpTo(eventId) {
  const current = room;
  for (let pages = 0; current && !current.messages.has(eventId) && current.olderCursor !== null && pages < 40; pages += 1) {
    await loadOlder();
    if (room !== current) return;
  }
  const node = $('messages').querySelector(`[data-event-id="${CSS.escape(eventId)}"]`);
  if (!node) {
    showError(new Error(t('roomNotFound')));
    return;
  }
  node.scrollIntoView({ block: 'center' });
  node.classList.add('flash');
  setTimeout(() => node.classList.remove('flash'), 2000);
}

function closeRoom() {
  closePanels();
  stoppedComposing();
  room?.socket?.stop();
  room = null;
  setLive($('room-live'), 'idle');
}

// ---- routing and start --------------------------------------------------------------

function route() {
  const match = location.hash.match(/^#\/room\/([^/?]+)(?:\?event=(.+))?$/);
  signedIn();
  $('sign-in').hidden = Boolean(me);
  if (me) startSidebar((state) => onSocketState($('sidebar-live'), state));
  else stopSidebar();
  setCurrentChannel(match ? decodeURIComponent(match[1]) : null);
  if (match) {
    const slug = decodeURIComponent(match[1]);
    $('city').hidden = true;
    $('room').hidden = false;
    stopPresence();
    const jump = match[2] ? decodeURIComponent(match[2]) : null;
    if (room?.slug !== slug) openRoom(slug).then(() => jump && jumpTo(jump));
    else if (jump) jumpTo(jump);
  } else {
    closeRoom();
    document.title = 'DAARION.city';
    $('room').hidden = true;
    $('city').hidden = false;
    loadRooms().catch(showError);
    if (me) startPresence();
  }
}

function applyLanguage() {
  translateDocument();
  $('lang').value = language();
  for (const [node, s] of [
    [$('city-live'), $('city-live').dataset.state],
    [$('room-live'), $('room-live').dataset.state],
    [$('sidebar-live'), $('sidebar-live').dataset.state],
  ]) setLive(node, s);
  renderSidebar();
  if (!$('city').hidden) renderCity();
  if (room) {
    renderAllMessages();
    renderTyping();
    if (room.context) setContext(room.context.mode, room.context.message);
    else clearContext();
    $('older').textContent = t('loadOlder');
    $('timeline').setAttribute('aria-label', t('messagesLabel'));
  }
}

function start() {
  for (const option of $('lang').options) option.hidden = !LANGUAGES.includes(option.value);
  takeTokenFromUrl();
  applyLanguage();

  $('lang').addEventListener('change', (event) => {
    setLanguage(event.target.value);
    applyLanguage();
  });
  startPanels();
  $('error-close').addEventListener('click', clearError);
  $('sign-in-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const value = $('token-input').value.trim();
    if (!claims(value)) {
      showError(new Error(t('badToken')));
      return;
    }
    setToken(value);
    $('token-input').value = '';
    clearError();
    stopPresence();
    closeRoom();
    route();
  });
  $('sign-out').addEventListener('click', () => {
    setToken(null);
    stopPresence();
    stopSidebar();
    closeRoom();
    location.hash = '#/';
    route();
  });
  $('older').addEventListener('click', loadOlder);
  // Infinite scroll upwards: older pages load as the top of the timeline comes into view.
  new IntersectionObserver(
    (entries) => {
      if (entries.some((e) => e.isIntersecting) && room && room.olderCursor) loadOlder();
    },
    { root: $('timeline'), rootMargin: '200px 0px 0px 0px' },
  ).observe($('older'));
  const textarea = $('message');
  // Others see the user typing while the composer holds text.
  textarea.addEventListener('input', () => room && me && composing(room.slug, textarea.value));
  document.addEventListener('visibilitychange', markNewestRead);
  textarea.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submitComposer();
    } else if (event.key === 'Escape' && room?.context) {
      const wasEdit = room.context.mode === 'edit';
      clearContext();
      if (wasEdit) textarea.value = '';
    }
  });
  $('attach-input').addEventListener('change', (event) => {
    const [file] = event.target.files;
    event.target.value = '';
    sendFile(file);
  });
  textarea.addEventListener('paste', (event) => {
    const [file] = event.clipboardData?.files ?? [];
    if (file) {
      event.preventDefault();
      sendFile(file);
    }
  });
  const composer = $('composer');
  composer.addEventListener('dragover', (event) => {
    if (!event.dataTransfer?.types.includes('Files')) return;
    event.preventDefault();
    composer.classList.add('dragging');
  });
  composer.addEventListener('dragleave', () => composer.classList.remove('dragging'));
  composer.addEventListener('drop', (event) => {
    composer.classList.remove('dragging');
    const [file] = event.dataTransfer?.files ?? [];
    if (!file) return;
    event.preventDefault();
    sendFile(file);
  });
  $('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    submitComposer();
  });
  $('composer-cancel').addEventListener('click', () => {
    if (room?.context?.mode === 'edit') textarea.value = '';
    clearContext();
    textarea.focus();
  });
  window.addEventListener('hashchange', route);
  // The glow of rooms fades as their last event ages.
  setInterval(() => !$('city').hidden && renderCity(), 60000);
  route();
}

start();
