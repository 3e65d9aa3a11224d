import { ConfidentialClientApplication, type INetworkModule, type NetworkRequestOptions, type NetworkResponse } from '@azure/msal-node';
import {
  startSandboxIdentityProvider,
  type SandboxIdentityProvider,
  type SandboxIdentityProviderOptions,
} from '../../../infra/local/sandbox-idp/index.js';
import type { Clock } from '../../../shared/clock.js';
import { issueTestServerCertificate } from '../../support/test-ca.js';

export const CUSTOMER_TENANT = '3f1c2a57-8d4e-4b6a-9c21-5e7f80a1b2c3';
export const OTHER_TENANT = '9b8a7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d';
export const CLIENT_ID = 'c0ffee00-1234-4abc-8def-0123456789ab';
export const CLIENT_SECRET = 'sandbox~secret.value_0123456789';
export const REDIRECT_URI = 'http://localhost:7071/api/oauth/callback';
export const OTHER_REDIRECT_URI = 'https://broker.example.com/api/oauth/callback';
export const SMTP_SEND = 'https://outlook.office.com/SMTP.Send';
export const APP_ONLY_SCOPE = 'https://outlook.office365.com/.default';

export interface FakeClock extends Clock {
  advance(ms: number): void;
}

export function fakeClock(start = new Date()): FakeClock {
  let now = start.getTime();
  return {
    now: () => new Date(now),
    advance: (ms) => {
      now += ms;
    },
  };
}

export async function startTestSandbox(options: Partial<SandboxIdentityProviderOptions> = {}): Promise<SandboxIdentityProvider> {
  const tls = await issueTestServerCertificate(['localhost', '127.0.0.1']);
  return startSandboxIdentityProvider({ tls, ...options });
}

/** The sandbox's demo set-up: one multi-tenant app, one mailbox user in a customer tenant. */
export function registerBrokerApp(idp: SandboxIdentityProvider, overrides: { secretExpiresOn?: Date } = {}): void {
  idp.registerApp({
    clientId: CLIENT_ID,
    clientSecret: CLIENT_SECRET,
    secretExpiresOn: overrides.secretExpiresOn ?? new Date(Date.now() + 365 * 86_400_000),
    redirectUris: [REDIRECT_URI, OTHER_REDIRECT_URI],
    displayName: 'Mail OAuth Broker (sandbox)',
  });
}

/** msal's default client uses global fetch too; this one also writes down every URL it was asked for. */
export class RecordingNetworkClient implements INetworkModule {
  readonly urls: string[] = [];

  /** With `onlyHost`, any other host fails at once instead of waiting on a network we do not have. */
  constructor(private readonly onlyHost?: string) {}

  sendGetRequestAsync<T>(url: string, options?: NetworkRequestOptions): Promise<NetworkResponse<T>> {
    return this.send<T>('GET', url, options);
  }

  sendPostRequestAsync<T>(url: string, options?: NetworkRequestOptions): Promise<NetworkResponse<T>> {
    return this.send<T>('POST', url, options);
  }

  private async send<T>(method: string, url: string, options?: NetworkRequestOptions): Promise<NetworkResponse<T>> {
    this.urls.push(url);
    if (this.onlyHost !== undefined && new URL(url).host !== this.onlyHost) throw new Error(`refusing to leave the sandbox for ${url}`);
    const response = await fetch(url, { method, headers: options?.headers ?? {}, ...(method === 'POST' ? { body: options?.body ?? '' } : {}) });
    const headers: Record<string, string> = {};
    response.headers.forEach((value, name) => {
      headers[name] = value;
    });
    return { headers, body: (await response.json()) as T, status: response.status };
  }
}

export function msalClient(
  idp: SandboxIdentityProvider,
  options: { tenant?: string; clientId?: string; clientSecret?: string; network?: INetworkModule } = {},
): ConfidentialClientApplication {
  return new ConfidentialClientApplication({
    auth: {
      clientId: options.clientId ?? CLIENT_ID,
      clientSecret: options.clientSecret ?? CLIENT_SECRET,
      authority: `${idp.authorityHost}/${options.tenant ?? 'organizations'}`,
      knownAuthorities: [idp.knownAuthority],
    },
    ...(options.network ? { system: { networkClient: options.network } } : {}),
  });
}

export interface PageForm {
  action: string;
  ctx: string;
  login: string | null;
}

const decode = (value: string) => value.replace(/&#(\d+);/g, (_m, code: string) => String.fromCharCode(Number(code)));

export function parseForm(html: string): PageForm {
  const action = /<form method="post" action="([^"]+)">/.exec(html)?.[1];
  const ctx = /name="ctx" value="([^"]+)"/.exec(html)?.[1];
  if (!action || !ctx) throw new Error(`no sign-in form in: ${html.slice(0, 300)}`);
  const login = /name="login"[^>]*value="([^"]*)"/.exec(html)?.[1];
  return { action: decode(action), ctx: decode(ctx), login: login === undefined ? null : decode(login) };
}

export interface PageResult {
  status: number;
  html: string;
  /** Where the browser was sent back to, when it was. */
  location: URL | null;
  headers: Headers;
}

async function toResult(response: Response): Promise<PageResult> {
  const location = response.headers.get('location');
  return { status: response.status, html: await response.text(), location: location ? new URL(location) : null, headers: response.headers };
}

export async function openPage(url: string): Promise<PageResult> {
  return toResult(await fetch(url, { redirect: 'manual' }));
}

export async function submit(base: string, form: PageForm, fields: Record<string, string>): Promise<PageResult> {
  const body = new URLSearchParams({ ctx: form.ctx, ...fields });
  return toResult(await fetch(new URL(form.action, base), { method: 'POST', body, redirect: 'manual' }));
}

/**
 * What a person does in the browser: open the authorize (or admin consent) URL, sign in (the
 * user name comes pre-filled from login_hint unless `login` is given), then answer the consent.
 */
export async function signInThroughPages(
  idp: SandboxIdentityProvider,
  url: string,
  steps: { login?: string; signIn?: 'signin' | 'cancel'; consent?: 'accept' | 'cancel' } = {},
): Promise<PageResult> {
  const first = await openPage(url);
  if (first.status !== 200) return first;
  const signInForm = parseForm(first.html);
  const afterSignIn = await submit(idp.signInHost, signInForm, { login: steps.login ?? signInForm.login ?? '', action: steps.signIn ?? 'signin' });
  if (afterSignIn.status !== 200 || !afterSignIn.html.includes('value="accept"')) return afterSignIn;
  return submit(idp.signInHost, parseForm(afterSignIn.html), { action: steps.consent ?? 'accept' });
}

/** A `code` redirect as msal's AuthorizationCodePayload. */
export function codePayload(location: URL | null): { code: string; state?: string; client_info?: string } {
  if (!location) throw new Error('the sign-in did not redirect back to the app');
  const code = location.searchParams.get('code');
  if (!code) throw new Error(`no code in ${location.toString()}`);
  const state = location.searchParams.get('state');
  const info = location.searchParams.get('client_info');
  return { code, ...(state ? { state } : {}), ...(info ? { client_info: info } : {}) };
}

export function decodeJwt(token: string): Record<string, unknown> {
  const payload = token.split('.')[1];
  if (!payload) throw new Error('not a JWT');
  return JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')) as Record<string, unknown>;
}
