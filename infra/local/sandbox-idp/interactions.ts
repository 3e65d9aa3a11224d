import { randomBytes, randomUUID } from 'node:crypto';
import type { Clock } from '../../../shared/clock.js';
import type { AppRecord, Directory, SandboxUser, TenantRef } from './directory.js';
import { describeError, EntraError, entraTimestamp, errorUri, type ErrorContext } from './entra-errors.js';
import { redirect, type Reply } from './http.js';
import { errorPage } from './pages.js';
import type { DelegatedScopes, ResourceDefinition } from './scopes.js';

/**
 * A sign-in in progress between the authorize (or admin consent) request and the redirect
 * back to the app. The browser carries only its random id (`ctx`), which also serves as the
 * pages' CSRF token; everything validated at the start stays on the server.
 */

interface Common {
  segment: string;
  tenant: TenantRef;
  app: AppRecord;
  redirectUri: string;
  state?: string;
  loginHint: string;
  user?: SandboxUser;
  expiresAt: number;
}

export interface AuthorizeInteraction extends Common {
  kind: 'authorize';
  scopes: DelegatedScopes;
  codeChallenge: string;
  nonce?: string;
  clientInfo: boolean;
  responseMode: 'query' | 'fragment';
  forceConsent: boolean;
}

export interface AdminConsentInteraction extends Common {
  kind: 'adminconsent';
  resources: readonly ResourceDefinition[];
  scope: string;
}

export type Interaction = AuthorizeInteraction | AdminConsentInteraction;

export interface FlowDeps {
  directory: Directory;
  clock: Clock;
  interactions: InteractionStore;
}

// Long enough for someone who wandered off mid sign-in; Entra's own login context is similar.
const INTERACTION_LIFETIME_MS = 60 * 60 * 1000;

export class InteractionStore {
  private readonly pending = new Map<string, Interaction>();

  constructor(private readonly clock: Clock) {}

  create(interaction: Omit<AuthorizeInteraction, 'expiresAt'> | Omit<AdminConsentInteraction, 'expiresAt'>): string {
    const ctx = randomBytes(32).toString('base64url');
    const now = this.clock.now().getTime();
    for (const [key, entry] of this.pending) if (entry.expiresAt <= now) this.pending.delete(key);
    this.pending.set(ctx, { ...interaction, expiresAt: now + INTERACTION_LIFETIME_MS } as Interaction);
    return ctx;
  }

  get(ctx: string | null): Interaction | undefined {
    if (!ctx) return undefined;
    const entry = this.pending.get(ctx);
    if (!entry || entry.expiresAt <= this.clock.now().getTime()) return undefined;
    return entry;
  }

  finish(ctx: string): void {
    this.pending.delete(ctx);
  }
}

/** Back to the app: query for code flow unless it asked for the fragment. */
export function redirectToApp(
  redirectUri: string,
  parameters: Record<string, string | undefined>,
  mode: 'query' | 'fragment' = 'query',
): Reply {
  const url = new URL(redirectUri);
  const defined = Object.entries(parameters).filter((entry): entry is [string, string] => entry[1] !== undefined);
  if (mode === 'fragment') url.hash = new URLSearchParams(defined).toString();
  else for (const [name, value] of defined) url.searchParams.append(name, value);
  return redirect(url.toString());
}

/** An error redirect the way Entra sends one: description with trace lines, error_uri, state. */
export function redirectError(
  target: { redirectUri: string; state?: string; responseMode?: 'query' | 'fragment' },
  failure: EntraError,
  context: ErrorContext,
): Reply {
  const reply = redirectToApp(
    target.redirectUri,
    {
      error: failure.error,
      error_subcode: failure.options.subcode,
      error_description: describeError(failure, context),
      error_uri: errorUri(failure.code),
      state: target.state,
    },
    target.responseMode,
  );
  return { ...reply, aadsts: failure.code };
}

export function errorPageFor(failure: EntraError, context: ErrorContext): Reply {
  return { ...errorPage(failure.status === 401 ? 400 : failure.status, describeError(failure, context)), aadsts: failure.code };
}

/** For a page that is gone: expired, finished, or never issued. Entra has no code to name here. */
export function staleInteractionPage(context: ErrorContext): Reply {
  return errorPage(
    400,
    `This sign-in page has expired or was already used. Go back to the app and start again.\r\nTrace ID: ${context.traceId}\r\nCorrelation ID: ${context.correlationId}\r\nTimestamp: ${entraTimestamp(context.now)}`,
  );
}

export function sessionState(): string {
  return randomUUID();
}
