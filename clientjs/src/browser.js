// The <script> bundle: window.Herald = { Herald, HeraldChannel, connectorClass, HeraldConnector }.
// HeraldConnector exists when laravel-echo's IIFE build (window.Echo) was loaded first.
import { connectorClass } from './echo.js';

export { Herald, HeraldChannel } from './herald.js';
export { connectorClass };
const E = globalThis.Echo;
export const HeraldConnector = E && E.Connector ? connectorClass(E.Connector) : undefined;
