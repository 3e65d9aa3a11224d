/** Types of bundle.mjs, for the tests and benchmarks that import it. */
import type { Metafile } from 'esbuild';

export declare const BUNDLE_DIR: string;
export declare function bundleFunctions(options: { root: string; outdir?: string; minify?: boolean }): Promise<Metafile>;
