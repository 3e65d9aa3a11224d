import type { SandboxUser } from './directory.js';
import { Aadsts, EntraError, type ErrorContext } from './entra-errors.js';
import type { Reply } from './http.js';
import {
  redirectError,
  redirectToApp,
  sessionState,
  staleInteractionPage,
  type AdminConsentInteraction,
  type AuthorizeInteraction,
  type FlowDeps,
  type Interaction,
} from './interactions.js';
import { consentPage, signInPage } from './pages.js';
import { consentItems, qualify } from './scopes.js';
import { clientInfo } from './tokens.js';

/**
 * The form posts of the sign-in and consent pages. Cancel and decline go back to the app with
 * the errors Entra sends; an unknown or wrong user stays on the sign-in page with Entra's code.
 */

function lookup(deps: FlowDeps, segment: string, form: URLSearchParams): { ctx: string; interaction: Interaction } | undefined {
  const ctx = form.get('ctx');
  const interaction = deps.interactions.get(ctx);
  if (!ctx || !interaction || interaction.segment.toLowerCase() !== segment.toLowerCase()) return undefined;
  return { ctx, interaction };
}

const stateOf = (interaction: Interaction) => (interaction.state === undefined ? {} : { state: interaction.state });
const modeOf = (interaction: Interaction) => (interaction.kind === 'authorize' ? interaction.responseMode : 'query');

export function submitSignIn(deps: FlowDeps, segment: string, form: URLSearchParams, context: ErrorContext): Reply {
  const found = lookup(deps, segment, form);
  if (!found) return staleInteractionPage(context);
  const { ctx, interaction } = found;

  if (form.get('action') === 'cancel') {
    deps.interactions.finish(ctx);
    // Entra's "Back"/cancel on the sign-in page: no description, only the subcode.
    return redirectToApp(interaction.redirectUri, { error: 'access_denied', error_subcode: 'cancel', ...stateOf(interaction) }, modeOf(interaction));
  }

  const login = (form.get('login') ?? '').trim();
  const stay = (failure: EntraError): Reply => ({
    ...signInPage({
      ctx,
      action: `/${interaction.segment}/login`,
      appName: interaction.app.displayName,
      loginHint: login,
      admin: interaction.kind === 'adminconsent',
      message: `AADSTS${failure.code}: ${failure.message}`,
      redirectOrigin: new URL(interaction.redirectUri).origin,
    }),
    aadsts: failure.code,
  });
  if (login === '') return stay(Aadsts.missingParameter('login'));
  const user = deps.directory.user(login);
  const directoryName = interaction.tenant.kind === 'tenant' ? interaction.tenant.tid : login.slice(login.indexOf('@') + 1);
  if (!user) return stay(Aadsts.userNotFound(login, directoryName));
  const app = interaction.app;
  const wrongTenant =
    (interaction.tenant.kind === 'tenant' && user.tid !== interaction.tenant.tid) || (app.signInAudience === 'single' && user.tid !== app.homeTenantId);
  if (wrongTenant) {
    const tenant = interaction.tenant.kind === 'tenant' ? interaction.tenant.tid : app.homeTenantId;
    return stay(Aadsts.userNotInTenant(user.upn, tenant, app.clientId, app.displayName));
  }
  if (interaction.kind === 'adminconsent' && !user.admin) return stay(Aadsts.adminRequired());

  interaction.user = user;
  if (interaction.kind === 'authorize') {
    const consented = deps.directory.userConsent(user, app.clientId);
    const wanted = consentItems(interaction.scopes);
    if (!interaction.forceConsent && wanted.every((item) => consented.has(item))) return completeAuthorize(deps, ctx, interaction, user);
    return consentPage({ ctx, action: `/${interaction.segment}/consent`, appName: app.displayName, upn: user.upn, permissions: wanted, admin: false, redirectOrigin: new URL(interaction.redirectUri).origin });
  }
  const permissions = interaction.resources.flatMap((resource) => resource.roles.map((role) => qualify(resource.id, role)));
  return consentPage({ ctx, action: `/${interaction.segment}/consent`, appName: app.displayName, upn: user.upn, permissions, admin: true, redirectOrigin: new URL(interaction.redirectUri).origin });
}

export function submitConsent(deps: FlowDeps, segment: string, form: URLSearchParams, context: ErrorContext): Reply {
  const found = lookup(deps, segment, form);
  if (!found || !found.interaction.user) return staleInteractionPage(context);
  const { ctx, interaction } = found;
  const user = interaction.user!;
  deps.interactions.finish(ctx);

  if (form.get('action') !== 'accept') {
    const declined = Aadsts.consentDeclined();
    if (interaction.kind === 'authorize') return redirectError({ redirectUri: interaction.redirectUri, ...stateOf(interaction), responseMode: interaction.responseMode }, declined, context);
    // The admin consent endpoint answers a decline with error and description only.
    const plain = new EntraError(declined.code, declined.error, declined.message);
    return redirectError({ redirectUri: interaction.redirectUri, ...stateOf(interaction) }, plain, context);
  }
  if (interaction.kind === 'authorize') {
    deps.directory.addUserConsent(user, interaction.app.clientId, consentItems(interaction.scopes));
    return completeAuthorize(deps, ctx, interaction, user);
  }
  return completeAdminConsent(deps, interaction, user);
}

function completeAuthorize(deps: FlowDeps, ctx: string, interaction: AuthorizeInteraction, user: SandboxUser): Reply {
  deps.interactions.finish(ctx);
  const code = deps.directory.issueCode({
    clientId: interaction.app.clientId,
    redirectUri: interaction.redirectUri,
    scopes: consentItems(interaction.scopes),
    user,
    codeChallenge: interaction.codeChallenge,
    ...(interaction.nonce === undefined ? {} : { nonce: interaction.nonce }),
    issuedAt: deps.clock.now(),
  });
  return redirectToApp(
    interaction.redirectUri,
    {
      code,
      // Sent only because msal asks with client_info=1; it keys the account by it.
      client_info: interaction.clientInfo ? clientInfo(user) : undefined,
      state: interaction.state,
      session_state: sessionState(),
    },
    interaction.responseMode,
  );
}

function completeAdminConsent(deps: FlowDeps, interaction: AdminConsentInteraction, admin: SandboxUser): Reply {
  deps.directory.addAdminConsent(admin.tid, interaction.app.clientId, interaction.resources.map((resource) => resource.id));
  // `tenant` is the admin's own directory: how an app learns a customer's tenant id.
  return redirectToApp(interaction.redirectUri, { admin_consent: 'True', tenant: admin.tid, state: interaction.state, scope: interaction.scope });
}
