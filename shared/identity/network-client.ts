import { AuthError, type INetworkModule, type NetworkRequestOptions, type NetworkResponse } from '@azure/msal-node';

/**
 * msal-node's own client puts no time limit on POSTs, so a token endpoint that hangs would
 * hang every token request waiting on it. This one gives every call a deadline and fails as
 * msal's `network_error`, which the broker treats as transient (serve a still-valid token,
 * else 503 with Retry-After).
 */
export class TimeLimitedNetworkClient implements INetworkModule {
  constructor(private readonly timeoutMs: number) {}

  sendGetRequestAsync<T>(url: string, options?: NetworkRequestOptions, timeout?: number): Promise<NetworkResponse<T>> {
    return this.send<T>('GET', url, options, Math.min(timeout ?? this.timeoutMs, this.timeoutMs));
  }

  sendPostRequestAsync<T>(url: string, options?: NetworkRequestOptions): Promise<NetworkResponse<T>> {
    return this.send<T>('POST', url, options, this.timeoutMs);
  }

  private async send<T>(method: 'GET' | 'POST', url: string, options: NetworkRequestOptions | undefined, timeoutMs: number): Promise<NetworkResponse<T>> {
    const signal = AbortSignal.timeout(timeoutMs);
    let response: Response;
    let text: string;
    try {
      response = await fetch(url, { method, headers: options?.headers ?? {}, ...(method === 'POST' ? { body: options?.body ?? '' } : {}), signal });
      text = await response.text();
    } catch (error) {
      const reason = error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError') ? `no answer within ${timeoutMs} ms` : error instanceof Error ? error.message : String(error);
      throw new AuthError('network_error', '', `Network request failed: ${reason}`);
    }
    const headers: Record<string, string> = {};
    response.headers.forEach((value, name) => {
      headers[name] = value;
    });
    let body: T;
    try {
      body = JSON.parse(text) as T;
    } catch {
      throw new AuthError('token_parsing_error', '', `The identity provider answered ${response.status} with a body that is not JSON.`);
    }
    return { headers, body, status: response.status };
  }
}
