// Texts of the city page in Ukrainian and English, and the current language.

const TEXTS = {
  en: {
    skip: 'Skip to content',
    language: 'Language',
    signOut: 'Sign out',
    dismiss: 'Dismiss',
    signInTitle: 'Sign in',
    signInHelp: 'Paste your DAARION token (JWT) to see who is online and to talk.',
    tokenLabel: 'Token (JWT)',
    signIn: 'Sign in',
    badToken: 'This is not a valid token, or it has expired.',
    removed: 'You are no longer a member of this channel.',
    cityTitle: 'The city',
    noRooms: 'No city rooms yet.',
    online: (n) => `${n} online`,
    typing: (n) => (n === 1 ? '1 typing' : `${n} typing`),
    active: 'active now',
    openRoom: (name) => `Open ${name}`,
    openInElement: 'Open in Element',
    backToCity: '← City',
    live: { idle: '', connecting: 'Connecting…', live: 'Live', offline: 'Reconnecting…', removed: '' },
    historyStart: 'The beginning of the room.',
    loadOlder: 'Load older messages',
    loading: 'Loading…',
    message: 'Message',
    messagePlaceholder: 'Write a message…',
    send: 'Send',
    save: 'Save',
    cancel: 'Cancel',
    composerHint: 'Enter sends, Shift+Enter starts a new line. Attach, paste or drop a file to send it.',
    attach: 'Attach a file',
    uploading: (name) => `Sending ${name}…`,
    fileTooLarge: (name, max) => `${name} is too large to send: files may be at most ${max}.`,
    openImage: (name) => `Open ${name} at full size`,
    downloadFile: (name) => `Download ${name}`,
    replyingTo: (who) => `Replying to ${who}`,
    inThreadOf: (who) => `Replying in the thread of ${who}`,
    editing: 'Editing your message',
    reply: 'Reply',
    thread: 'Thread',
    react: 'React',
    reactWith: (key) => `React with ${key}`,
    reactionCount: (key, n, mine) => `${key} ${n}${mine ? ', yours' : ''}`,
    edit: 'Edit',
    delete: 'Delete',
    confirmDelete: 'Delete this message?',
    edited: '(edited)',
    deleted: 'Message deleted',
    you: 'you',
    agent: 'agent',
    quoteOf: (who) => `In reply to ${who}`,
    unknownMessage: 'an earlier message',
    threadOf: (who) => `In the thread of ${who}`,
    threadReplies: (n) => (n === 1 ? '1 reply in thread' : `${n} replies in thread`),
    someoneTyping: (names) => (names.length === 1 ? `${names[0]} is typing…` : `${names.join(', ')} are typing…`),
    channelsTitle: 'Your channels',
    noChannels: 'No channels yet: join a room of the city.',
    noMessagesYet: 'No messages yet',
    unreadCount: (n) => (n === 1 ? '1 unread message' : `${n} unread messages`),
    mentionCount: (n) => (n === 1 ? '1 mention of you' : `${n} mentions of you`),
    newMessage: (who, text) => `New message from ${who}: ${text}`,
    signInToTalk: 'Sign in to read and write in this room.',
    networkError: 'The city cannot be reached. Check your connection.',
    errorPrefix: 'Error',
    roomNotFound: 'There is no such room.',
    messagesLabel: 'Messages',
    searchLabel: 'Search messages',
    search: 'Search',
    searchTooShort: 'Type at least two letters.',
    noResults: 'Nothing found.',
    newChannel: 'New channel',
    channelName: 'Name',
    microdaoId: 'microDAO (optional)',
    privateChannel: 'Private (by invitation)',
    create: 'Create',
    cityRoomsByAdmins: 'A public channel without a microDAO is a city room: only admins make those.',
    pinned: (n) => (n === 1 ? '1 pinned message' : `${n} pinned messages`),
    pin: 'Pin',
    unpin: 'Unpin',
    mayNotPin: 'You may not pin in this channel.',
    aFile: 'A file',
    members: (n) => (n === 1 ? '1 member' : `${n} members`),
    isOnline: 'online',
    invited: 'invited',
    role_admin: 'admin',
    role_moderator: 'moderator',
    inviteLabel: 'Invite (user:name or agent:name)',
    invite: 'Invite',
    invitedSomeone: (who) => `${who} is invited.`,
    mayNotInvite: 'You may not invite to this channel.',
    leave: 'Leave this channel',
    leaveConfirm: 'Leave this channel?',
  },
  uk: {
    skip: 'Перейти до вмісту',
    language: 'Мова',
    signOut: 'Вийти',
    dismiss: 'Закрити',
    signInTitle: 'Вхід',
    signInHelp: 'Вставте свій токен DAARION (JWT), щоб бачити, хто онлайн, і спілкуватися.',
    tokenLabel: 'Токен (JWT)',
    signIn: 'Увійти',
    badToken: 'Це не дійсний токен, або його термін минув.',
    removed: 'Ви більше не учасник цього каналу.',
    cityTitle: 'Місто',
    noRooms: 'Кімнат міста ще немає.',
    online: (n) => `${n} онлайн`,
    typing: (n) => `друкують: ${n}`,
    active: 'зараз активна',
    openRoom: (name) => `Відкрити ${name}`,
    openInElement: 'Відкрити в Element',
    backToCity: '← Місто',
    live: { idle: '', connecting: 'Підключення…', live: 'Наживо', offline: 'Перепідключення…', removed: '' },
    historyStart: 'Початок кімнати.',
    loadOlder: 'Завантажити старіші повідомлення',
    loading: 'Завантаження…',
    message: 'Повідомлення',
    messagePlaceholder: 'Напишіть повідомлення…',
    send: 'Надіслати',
    save: 'Зберегти',
    cancel: 'Скасувати',
    composerHint: 'Enter надсилає, Shift+Enter — новий рядок. Файл можна прикріпити, вставити або перетягнути.',
    attach: 'Прикріпити файл',
    uploading: (name) => `Надсилання ${name}…`,
    fileTooLarge: (name, max) => `${name} завеликий: файл може бути не більше ${max}.`,
    openImage: (name) => `Відкрити ${name} у повному розмірі`,
    downloadFile: (name) => `Завантажити ${name}`,
    replyingTo: (who) => `Відповідь для ${who}`,
    inThreadOf: (who) => `Відповідь у гілці ${who}`,
    editing: 'Редагування вашого повідомлення',
    reply: 'Відповісти',
    thread: 'Гілка',
    react: 'Реакція',
    reactWith: (key) => `Реакція ${key}`,
    reactionCount: (key, n, mine) => `${key} ${n}${mine ? ', ваша' : ''}`,
    edit: 'Редагувати',
    delete: 'Видалити',
    confirmDelete: 'Видалити це повідомлення?',
    edited: '(змінено)',
    deleted: 'Повідомлення видалено',
    you: 'ви',
    agent: 'агент',
    quoteOf: (who) => `У відповідь ${who}`,
    unknownMessage: 'на попереднє повідомлення',
    threadOf: (who) => `У гілці ${who}`,
    threadReplies: (n) => `відповідей у гілці: ${n}`,
    someoneTyping: (names) => `${names.join(', ')} друкує…`,
    channelsTitle: 'Ваші канали',
    noChannels: 'Каналів ще немає: приєднайтеся до кімнати міста.',
    noMessagesYet: 'Повідомлень ще немає',
    unreadCount: (n) => `непрочитаних повідомлень: ${n}`,
    mentionCount: (n) => `згадок про вас: ${n}`,
    newMessage: (who, text) => `Нове повідомлення від ${who}: ${text}`,
    signInToTalk: 'Увійдіть, щоб читати й писати в цій кімнаті.',
    networkError: 'Місто недоступне. Перевірте з’єднання.',
    errorPrefix: 'Помилка',
    roomNotFound: 'Такої кімнати немає.',
    messagesLabel: 'Повідомлення кімнати',
    searchLabel: 'Пошук повідомлень',
    search: 'Шукати',
    searchTooShort: 'Введіть щонайменше дві літери.',
    noResults: 'Нічого не знайдено.',
    newChannel: 'Новий канал',
    channelName: 'Назва',
    microdaoId: 'microDAO (необовʼязково)',
    privateChannel: 'Приватний (за запрошенням)',
    create: 'Створити',
    cityRoomsByAdmins: 'Публічний канал без microDAO — це кімната міста: їх створюють лише адміністратори.',
    pinned: (n) => `Закріплено: ${n}`,
    pin: 'Закріпити',
    unpin: 'Відкріпити',
    mayNotPin: 'Ви не можете закріплювати в цьому каналі.',
    aFile: 'Файл',
    members: (n) => `Учасники: ${n}`,
    isOnline: 'у мережі',
    invited: 'запрошено',
    role_admin: 'адміністратор',
    role_moderator: 'модератор',
    inviteLabel: 'Запросити (user:імʼя або agent:імʼя)',
    invite: 'Запросити',
    invitedSomeone: (who) => `${who} запрошено.`,
    mayNotInvite: 'Ви не можете запрошувати до цього каналу.',
    leave: 'Вийти з каналу',
    leaveConfirm: 'Вийти з цього каналу?',
  },
};

const STORAGE_KEY = 'city.lang';

/** The languages offered. */
export const LANGUAGES = Object.keys(TEXTS);

let current = initial();

function initial() {
  const saved = localStorage.getItem(STORAGE_KEY);
  if (saved && TEXTS[saved]) return saved;
  return (navigator.language || 'en').toLowerCase().startsWith('uk') ? 'uk' : 'en';
}

/** The current language. */
export function language() {
  return current;
}

/** Switches the language (remembered on this device). */
export function setLanguage(lang) {
  if (!TEXTS[lang]) return;
  current = lang;
  localStorage.setItem(STORAGE_KEY, lang);
}

/** A text of the current language; functions take the given arguments. */
export function t(key, ...args) {
  const value = TEXTS[current][key] ?? TEXTS.en[key] ?? key;
  return typeof value === 'function' ? value(...args) : value;
}

/** Fills the static texts of the page (`data-i18n`, `data-i18n-placeholder`). */
export function translateDocument(root = document) {
  document.documentElement.lang = current;
  for (const node of root.querySelectorAll('[data-i18n]')) node.textContent = t(node.dataset.i18n);
  for (const node of root.querySelectorAll('[data-i18n-placeholder]')) {
    node.placeholder = t(node.dataset.i18nPlaceholder);
  }
}
