// REST calls to Parley with the person's token (none in development mode).

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

export class Api {
  constructor(token) {
    this.token = token || '';
  }

  headers(extra = {}) {
    const h = { ...extra };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    return h;
  }

  async request(method, path, body) {
    const init = { method, headers: this.headers() };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (e) {
      throw new ApiError(0, 'network', `Parley did not answer (${e.message}).`);
    }
    if (res.status === 204) return null;
    const text = await res.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      // A non-JSON answer is reported below by status.
    }
    if (!res.ok) {
      const err = json && json.error ? json.error : { code: 'http_' + res.status, message: text };
      throw new ApiError(res.status, err.code, err.message || `HTTP ${res.status}`);
    }
    return json;
  }

  // The raw bytes of a report file, for a download link that carries the token.
  async blob(path) {
    const res = await fetch(path, { headers: this.headers() });
    if (!res.ok) throw new ApiError(res.status, 'http_' + res.status, `HTTP ${res.status}`);
    return res.blob();
  }

  health() { return this.request('GET', '/health'); }
  personas() { return this.request('GET', '/api/personas'); }
  createSession(personaId) { return this.request('POST', '/api/sessions', { persona_id: personaId }); }
  session(id) { return this.request('GET', `/api/sessions/${encodeURIComponent(id)}`); }
  endSession(id) { return this.request('POST', `/api/sessions/${encodeURIComponent(id)}/end`); }
  sessions(offset = 0, limit = 20) { return this.request('GET', `/api/sessions?offset=${offset}&limit=${limit}`); }
  progress() { return this.request('GET', '/api/progress'); }
  report(id) { return this.request('GET', `/api/sessions/${encodeURIComponent(id)}/report`); }
}
