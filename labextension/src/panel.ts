/**
 * The sessions sidebar: polls `<base_url>rhapsody-lab/sessions` every second while
 * visible and updates one card per session in place (so a button is never replaced
 * under the pointer).
 */
import { URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { LabIcon } from '@jupyterlab/ui-components';
import { Widget } from '@lumino/widgets';

const ICON_SVG = `<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 24 24">
<g class="jp-icon3" fill="#616161">
<rect x="3" y="13" width="4" height="8" rx="1"/><rect x="10" y="8" width="4" height="13" rx="1"/>
<rect x="17" y="3" width="4" height="18" rx="1"/></g></svg>`;

export const rhapsodyIcon = new LabIcon({ name: 'rhapsody-lab:icon', svgstr: ICON_SVG });

export const POLL_MS = 1000;

/** One session as `GET rhapsody-lab/sessions` describes it. */
export interface ISessionInfo {
  key: string;
  uid: string;
  pid: number;
  kernel_id: string | null;
  path: string | null;
  backends: {
    [name: string]: {
      capacity: number | null;
      kind: string;
      state?: string | null;
      pilot?: string | null;
    };
  };
  counts: { [state: string]: number };
  total: number;
  dashboard: { [plot: string]: string };
  dashboard_error: string | null;
}

export type OpenPlot = (key: string, uid: string, plot: string, url: string) => void;

/** What `GET rhapsody-lab/sessions` answers: the sessions and the engine's state order. */
export interface ISessionsReply {
  sessions: ISessionInfo[];
  states: string[];
}

function el<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  className: string,
  text?: string
): HTMLElementTagNameMap[K] {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text;
  }
  return node;
}

export async function fetchSessions(
  settings: ServerConnection.ISettings
): Promise<ISessionsReply> {
  const url = URLExt.join(settings.baseUrl, 'rhapsody-lab', 'sessions');
  const response = await ServerConnection.makeRequest(url, {}, settings);
  if (!response.ok) {
    throw new ServerConnection.ResponseError(response);
  }
  const data = await response.json();
  return { sessions: data.sessions ?? [], states: data.states ?? [] } as ISessionsReply;
}

class SessionCard {
  readonly node = el('div', 'rh-lab-session');
  private _title = el('div', 'rh-lab-session-title');
  private _path = el('div', 'rh-lab-session-path');
  private _backends = el('div', 'rh-lab-backends');
  private _counts = el('div', 'rh-lab-counts');
  private _plots = el('div', 'rh-lab-plots');
  private _plotKey = '';

  constructor(private _open: OpenPlot) {
    this.node.append(this._title, this._path, this._backends, this._counts, this._plots);
  }

  update(s: ISessionInfo, order: string[]): void {
    this.node.dataset.sessionKey = s.key;
    this.node.dataset.uid = s.uid;
    this._title.textContent = s.uid;
    this._title.title = `pid ${s.pid}${s.kernel_id ? `, kernel ${s.kernel_id}` : ''}`;
    this._path.textContent = s.path ?? '';
    this._backends.textContent = Object.entries(s.backends)
      .map(([name, b]) => {
        const notes = [
          b.capacity ? `${b.capacity} slots` : '',
          b.pilot ? `pilot ${b.pilot}` : '' // RADICAL-Pilot: start-up takes a while
        ].filter(Boolean);
        return notes.length ? `${name} (${notes.join(', ')})` : name;
      })
      .join(', ');
    const rank = (state: string) => {
      const i = order.indexOf(state);
      return i < 0 ? order.length : i; // a state the server did not list goes last
    };
    const states = Object.keys(s.counts).sort((a, b) => rank(a) - rank(b));
    this._counts.replaceChildren(
      ...states.map(state => {
        const chip = el('span', `rh-lab-count rh-lab-state-${state.toLowerCase()}`);
        chip.dataset.state = state;
        chip.textContent = `${state} ${s.counts[state]}`;
        return chip;
      })
    );
    this._counts.dataset.total = String(s.total);
    if (!states.length) {
      this._counts.textContent = 'no tasks yet';
    }
    const plots = Object.entries(s.dashboard);
    const plotKey = JSON.stringify(plots) + (s.dashboard_error ?? '');
    if (plotKey === this._plotKey) {
      return;
    }
    this._plotKey = plotKey;
    this._plots.replaceChildren();
    for (const [plot, url] of plots) {
      const button = el('button', 'jp-Button jp-mod-styled rh-lab-plot-button', plot);
      button.dataset.plot = plot;
      button.title = `Open the ${plot} plot of ${s.uid}`;
      button.addEventListener('click', () => this._open(s.key, s.uid, plot, url));
      this._plots.append(button);
    }
    if (!plots.length) {
      this._plots.append(
        el(
          'div',
          'rh-lab-note',
          s.dashboard_error
            ? `dashboard unavailable: ${s.dashboard_error}`
            : 'dashboard starting…'
        )
      );
    }
  }
}

export class SessionsPanel extends Widget {
  private _cards = new Map<string, SessionCard>();
  private _list = el('div', 'rh-lab-list');
  private _status = el('div', 'rh-lab-status');
  private _timer = 0;
  private _busy = false;
  private _settings = ServerConnection.makeSettings();

  constructor(private _open: OpenPlot) {
    super();
    this.id = 'rhapsody-lab-sessions';
    this.addClass('rh-lab-sidebar');
    this.title.icon = rhapsodyIcon;
    this.title.caption = 'rhapsody_lab sessions';
    const header = el('h2', 'rh-lab-header', 'rhapsody_lab sessions');
    this.node.append(header, this._status, this._list);
    this._timer = window.setInterval(() => void this.refresh(), POLL_MS);
    void this.refresh();
  }

  dispose(): void {
    window.clearInterval(this._timer);
    super.dispose();
  }

  /** Fetch and show the sessions (skipped while hidden or while a fetch is out). */
  async refresh(force = false): Promise<void> {
    if (this._busy || (!force && !this.isVisible && this._cards.size > 0)) {
      return;
    }
    this._busy = true;
    try {
      const reply = await fetchSessions(this._settings);
      this._status.textContent = '';
      this.render(reply.sessions, reply.states);
    } catch (err) {
      this._status.textContent = `cannot list sessions: ${err}`;
    } finally {
      this._busy = false;
    }
  }

  render(sessions: ISessionInfo[], states: string[]): void {
    const seen = new Set<string>();
    for (const s of sessions) {
      seen.add(s.key);
      let card = this._cards.get(s.key);
      if (!card) {
        card = new SessionCard(this._open);
        this._cards.set(s.key, card);
      }
      card.update(s, states);
      if (card.node.parentNode !== this._list) {
        this._list.append(card.node); // new cards go last (the server sorts by start)
      }
    }
    for (const [key, card] of this._cards) {
      if (!seen.has(key)) {
        card.node.remove();
        this._cards.delete(key);
      }
    }
    this.node.dataset.sessions = String(sessions.length);
    if (!sessions.length) {
      this._status.textContent =
        'No live sessions. In a notebook: %load_ext rhapsody_lab, then %rhapsody start';
    }
  }
}
