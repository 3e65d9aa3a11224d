import type { TimerRegistration } from './http.js';

export function rotateTokens(schedule: string): TimerRegistration {
  return {
    kind: 'timer',
    name: 'rotate-tokens',
    schedule,
    async run(services, context, timer) {
      if (timer.isPastDue) context.warn('rotate-tokens is running late (the previous run overran or the app was idle)');
      const summary = await services.sweep.run();
      context.log('rotate-tokens finished', summary);
    },
  };
}
