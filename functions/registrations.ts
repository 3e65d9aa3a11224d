import { connect } from './connect.js';
import { health } from './health.js';
import type { Registration } from './http.js';
import { manageAlerts } from './manage-alerts.js';
import { manageApps } from './manage-apps.js';
import { manageConnections } from './manage-connections.js';
import { manageTenants } from './manage-tenants.js';
import { notFound } from './not-found.js';
import { rotateTokens } from './rotate-tokens.js';
import { token } from './token.js';

/** The one list of functions: the Functions host and the local host both register from it. */
export function registrations(options: { rotationSchedule: string }): Registration[] {
  return [...health, ...manageApps, ...manageTenants, ...manageConnections, ...manageAlerts, ...connect, ...token, rotateTokens(options.rotationSchedule), notFound];
}
