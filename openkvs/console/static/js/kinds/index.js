// The kinds of storage the console shows, one module each. A kind is {path, title, list(main), detail(main, id)}:
// adding datasets or request queues is one module here and one line in this list.

import keyValueStores from "./key-value-stores.js";

export const KINDS = [keyValueStores];
