/** Types of package.mjs, for the tests that import it. */
export declare const STAGE_DIR: string;
export declare function funcignoreMatcher(text: string): (path: string, isDirectory: boolean) => boolean;
export declare function runtimeManifest(manifest: Record<string, unknown>): Record<string, unknown>;
