// The user's channels beside the page: the ones they joined, newest activity first, with
// unread and mention badges and the last message, kept live by their own feed
// (/ws/messaging). And what the page tells Matrix for its user: what they have read (a
// read receipt when a channel is open and shown) and that they are typing.

import { LiveSocket, api, token } from './api.js';
import { t } from './i18n.js';

const $ = (id) => document.getElementById(id);

/** "Typing" is said again at most this often while the user composes (Synapse keeps it 10 s). */
const TYPING_EVERY_MS = 4000;

const sidebar = {
  channels: [],
  loaded: false,
  socket: null,
  current: null,
  reload: null,
  onState: () => {},
};

function slugOf(channel) {
  return channel.slug ?? String(channel.id).replace(/^room_city_/, '');
}

function node(tag, className, text) {
  const n = document.createElement(tag);
  if (className) n.className = className;
  if (text !== undefined) n.textContent = text;
  return n;
}

function lastLine(message) {
  if (!message) return t('noMessagesYet');
  const sender = String(message.sender_id || message.sender_matrix_id || '').replace(/^(user|agent):/, '');
  const text = (message.preview || '').replace(/\s+/g, ' ');
  return `${sender}: ${text.length > 60 ? `${text.slice(0, 60)}…` : text}`;
}

function item(channel) {
  const slug = slugOf(channel);
  const unread = channel.unread_count ?? 0;
  const mentions = channel.mention_count ?? 0;
  const li = node('li', `channel${slug === sidebar.current ? ' current' : ''}${unread ? ' has-unread' : ''}`);
  Object.assign(li.dataset, { channelSlug: slug, unread: String(unread), mentions: String(mentions) });
  const link = node('a', 'channel-link');
  link.href = `#/room/${encodeURIComponent(slug)}`;
  if (slug === sidebar.current) link.setAttribute('aria-current', 'page');
  const head = node('span', 'channel-head');
  head.append(node('span', 'channel-name', channel.name));
  const badge = node('span', 'badge unread-badge', String(unread));
  badge.hidden = unread === 0;
  badge.setAttribute('aria-label', t('unreadCount', unread));
  const mention = node('span', 'badge mention-badge', `@${mentions}`);
  mention.hidden = mentions === 0;
  mention.setAttribute('aria-label', t('mentionCount', mentions));
  head.append(badge, mention);
  link.append(head, node('span', 'channel-last', lastLine(channel.last_message)));
  li.append(link);
  return li;
}

/** Draws the list again (after a change, or in another language). */
export function renderSidebar() {
  const list = $('channel-list');
  if (!list) return;
  const focused = document.activeElement?.closest?.('[data-channel-slug]')?.dataset.channelSlug;
  list.replaceChildren(...sidebar.channels.map(item));
  if (sidebar.channels.length === 0) list.append(node('li', 'empty', t('noChannels')));
  if (focused) list.querySelector(`[data-channel-slug="${CSS.escape(focused)}"] a`)?.focus();
}

function byActivity(a, b) {
  const at = (c) => (c.last_message ? Date.parse(c.last_message.created_at) : 0);
  return at(b) - at(a);
}

async function load() {
  const body = await api('GET', '/api/messaging/channels?sort=activity');
  sidebar.channels = (body.channels ?? []).filter((c) => c.joined);
  sidebar.loaded = true;
  renderSidebar();
}

/** Reads the list again, once for a burst of reasons. */
function reload() {
  if (!sidebar.reload) {
    sidebar.reload = load()
      .catch((error) => console.error(error))
      .finally(() => {
        sidebar.reload = null;
      });
  }
  return sidebar.reload;
}

function onFrame(frame) {
  if (frame.type === 'unread.updated') {
    const channel = sidebar.channels.find((c) => c.id === frame.channel_id);
    if (!channel) {
      reload();
      return;
    }
    Object.assign(channel, {
      unread_count: frame.unread_count,
      mention_count: frame.mention_count,
      last_read_event_id: frame.last_read_event_id,
      last_message: frame.last_message,
    });
    sidebar.channels.sort(byActivity);
    renderSidebar();
  } else if (['channel.joined', 'channel.left', 'invite', 'resync'].includes(frame.type)) {
    reload();
  }
}

/** Shows the list and keeps it live while signed in; `onState` gets the feed's states. */
export function startSidebar(onState) {
  $('sidebar').hidden = false;
  if (sidebar.socket) return;
  sidebar.onState = onState;
  sidebar.socket = new LiveSocket(() => `/ws/messaging?token=${encodeURIComponent(token())}`, {
    onFrame,
    onState: (state) => sidebar.onState(state),
    // (Re)subscribed: whatever changed meanwhile is read from the list.
    onOpen: () => reload(),
  });
  sidebar.socket.start();
}

export function stopSidebar() {
  sidebar.socket?.stop();
  sidebar.socket = null;
  sidebar.channels = [];
  sidebar.loaded = false;
  $('sidebar').hidden = true;
  renderSidebar();
}

/** Marks the open channel in the list. */
export function setCurrentChannel(slug) {
  sidebar.current = slug;
  renderSidebar();
}

const reading = new Map();

/**
 * The user has seen `eventId` (the newest message) in channel `slug`: a read receipt as
 * them, unless the list says they read it already, or that they have not joined the
 * channel (nothing to mark there; before the list is read the API says so with a 403,
 * quietly skipped).
 */
export function markRead(slug, eventId) {
  const known = sidebar.channels.find((c) => slugOf(c) === slug);
  if (!eventId || (sidebar.loaded && !known)) return;
  if (known?.last_read_event_id === eventId || reading.get(slug) === eventId) return;
  reading.set(slug, eventId);
  api('POST', `/api/messaging/channels/${encodeURIComponent(slug)}/read`, { event_id: eventId })
    .then((answer) => {
      const channel = sidebar.channels.find((c) => c.id === answer.channel_id);
      if (channel) {
        Object.assign(channel, answer);
        renderSidebar();
      }
    })
    .catch((error) => {
      if (error.status !== 403) console.error(error);
    })
    .finally(() => {
      if (reading.get(slug) === eventId) reading.delete(slug);
    });
}

const typing = { slug: null, at: 0 };

function sendTyping(slug, value) {
  api('POST', `/api/messaging/channels/${encodeURIComponent(slug)}/typing`, { typing: value }).catch((error) => {
    if (error.status !== 403) console.error(error);
  });
}

/** The user's composer in channel `slug` holds `text`: typing while it has some. */
export function composing(slug, text) {
  if (!text.trim()) {
    stoppedComposing();
    return;
  }
  const now = Date.now();
  if (typing.slug === slug && now - typing.at < TYPING_EVERY_MS) return;
  if (typing.slug && typing.slug !== slug) sendTyping(typing.slug, false);
  Object.assign(typing, { slug, at: now });
  sendTyping(slug, true);
}

/** The user sent, emptied the composer or left the channel. */
export function stoppedComposing() {
  if (!typing.slug) return;
  sendTyping(typing.slug, false);
  Object.assign(typing, { slug: null, at: 0 });
}
