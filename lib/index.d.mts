// Types of the ESM entry (lib/index.mjs): the same declarations as
// require('cowshm'), seen by TypeScript as an ES module with the CommonJS
// module object as its default export, as Node.js does.
import * as cowshm from '../dist/index.js';

export * from '../dist/index.js';
export default cowshm;
