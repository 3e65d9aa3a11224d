import { z } from 'zod';

export const tokenRequestInput = z
  .object({
    /** A connection id (`con_…`) or the connection's mailbox address. */
    connection: z.string().trim().min(1).max(320),
  })
  .strict();
export type TokenRequestInput = z.infer<typeof tokenRequestInput>;
