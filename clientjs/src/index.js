export { Herald, HeraldChannel } from './herald.js';
export { connectorClass } from './echo.js';
