// The admin API client: every call carries the admin token kept in
// sessionStorage (gone when the tab closes). A 401 forgets the token and
// sends the user back to the token form.

const KEY = 'sluice.admin.token';

export function token() {
  return sessionStorage.getItem(KEY);
}

export function setToken(value) {
  sessionStorage.setItem(KEY, value.trim());
}

export function clearToken() {
  sessionStorage.removeItem(KEY);
}

/** An API failure: HTTP status and the API's one-line `error`. */
export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }

  /** The object key the message names, e.g. `smart_hosts` (see errorKey). */
  get key() {
    return errorKey(this.message);
  }
}

/**
 * The key a 400 names. Object validation says
 * `outbound_connector "x": smart_hosts: ...`; a body the API could not read
 * says `invalid JSON body: ...target type: tls: unknown variant ...`.
 */
export function errorKey(message) {
  const object = /^[a-z_]+ "(?:[^"\\]|\\.)*": ([A-Za-z_][\w.]*): /.exec(message);
  if (object) return object[1];
  const body = /target type: ([A-Za-z_][\w.[\]]*): /.exec(message);
  if (body) return body[1].replace(/\[\d+\]/g, '');
  const query = /^([a-z_]+): /.exec(message);
  return query ? query[1] : null;
}

export async function api(method, path, body) {
  return (await exchange(method, path, body)).data;
}

/**
 * One page of a paged listing (queue, quarantine, trace): the items and the
 * cursor of the next page from X-Next-Cursor, null on the last page.
 */
export async function getPage(path, cursor) {
  const separator = path.includes('?') ? '&' : '?';
  const { data, response } = await exchange('GET', cursor ? `${path}${separator}cursor=${encodeURIComponent(cursor)}` : path);
  return { items: data || [], next: response.headers.get('X-Next-Cursor') };
}

async function exchange(method, path, body) {
  const headers = { Authorization: `Bearer ${token() || ''}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const response = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (response.status === 401) {
    clearToken();
    window.dispatchEvent(new CustomEvent('sluice:signed-out'));
    throw new ApiError(401, data?.error || 'The admin token was refused');
  }
  if (!response.ok) {
    throw new ApiError(response.status, data?.error || text || response.statusText);
  }
  return { data, response };
}

export const get = (path) => api('GET', path);
export const post = (path, body) => api('POST', path, body);
export const put = (path, body) => api('PUT', path, body);
export const del = (path) => api('DELETE', path);
export const enc = encodeURIComponent;

/** Query string from an object, leaving out empty values. */
export function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const text = q.toString();
  return text ? `?${text}` : '';
}

/**
 * A listing read page by page: `more()` appends the next page; `done` once
 * the node gave the last one. Pages stay bounded however long the list.
 */
export function pager(path) {
  const list = { items: [], next: null, done: false };
  list.more = async () => {
    const page = await getPage(path, list.next);
    list.items = list.items.concat(page.items);
    list.next = page.next;
    list.done = !page.next;
  };
  return list;
}
