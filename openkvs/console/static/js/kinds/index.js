// The kinds of storage the console shows, one module each. A kind is {path, title, noun, list(page), detail(page,
// id)}; resources.js (list page, header, rename, delete) and sharing.js (links, generalAccess, grants) do what every
// kind shares, since the API has the same endpoints under each kind's path. Adding another kind is
// one module here and one line in this list.

import datasets from "./datasets.js";
import keyValueStores from "./key-value-stores.js";
import requestQueues from "./request-queues.js";

export const KINDS = [keyValueStores, datasets, requestQueues];
