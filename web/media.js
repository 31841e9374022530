// Files in the page: the upload limit, uploads with their progress (XMLHttpRequest: fetch
// reports no upload progress), and the addresses images and files are shown from.

import { ApiError, api, token } from './api.js';

let config = null;

/** The media settings of the bridge (`max_bytes`), asked once. */
export async function mediaConfig() {
  config ??= await api('GET', '/api/messaging/media/config');
  return config;
}

/**
 * Uploads `file` to the channel `slug` with the form's other `fields` (`text`, `reply_to`,
 * `thread_root`); `onProgress(fraction)` as it goes. The message, or throws an `ApiError`.
 */
export function upload(slug, file, fields, onProgress) {
  return new Promise((resolve, reject) => {
    const form = new FormData();
    for (const [name, value] of Object.entries(fields)) if (value) form.append(name, value);
    form.append('file', file, file.name || 'file');
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/api/messaging/channels/${encodeURIComponent(slug)}/media`);
    xhr.setRequestHeader('Authorization', `Bearer ${token()}`);
    xhr.setRequestHeader('Idempotency-Key', crypto.randomUUID());
    xhr.setRequestHeader('Accept', 'application/json');
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress(event.loaded / event.total);
    };
    xhr.onerror = () => reject(new ApiError(0, 'network', 'the upload was interrupted'));
    xhr.onload = () => {
      let json = null;
      try {
        json = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        json = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(json);
      else {
        const detail = json?.detail ?? (json?.field ? `field ${json.field}` : '');
        reject(new ApiError(xhr.status, json?.error ?? `http_${xhr.status}`, detail));
      }
    };
    xhr.send(form);
  });
}

/** Where the page loads the file of `media` from (a thumbnail of about `size` px, if given). */
export function mediaUrl(media, size) {
  const [server, id] = media.mxc.replace(/^mxc:\/\//, '').split('/');
  const query = new URLSearchParams({ token: token() ?? '' });
  if (size) {
    query.set('thumbnail', `${size}x${size}`);
    query.set('method', 'scale');
  }
  return `/api/messaging/media/${encodeURIComponent(server)}/${encodeURIComponent(id)}?${query}`;
}

/** A size in bytes as people read it. */
export function formatSize(bytes) {
  if (typeof bytes !== 'number') return '';
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KiB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}
