// The ES module view of the package: named and default imports type-check the
// same way as from CommonJS.
import cowshm, { Region, sum, pageSize, atomics, Mutex } from 'cowshm';
import * as namespace from 'cowshm';

const r: Region = Region.create({ size: pageSize });
const total: bigint = sum(new Int32Array(r.map().buffer));
const same: typeof Region = cowshm.Region;
const alsoSame: typeof Region = namespace.Region;
void [total, same, alsoSame, atomics.notify, Mutex];
// @ts-expect-error no such export
import { Regions } from 'cowshm';
void Regions;
