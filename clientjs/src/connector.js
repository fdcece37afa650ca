// Connector mode: Herald as a custom broadcaster of the real laravel-echo 2.x package.
//   new Echo({ broadcaster: HeraldConnector, host: 'https://rt.example.com', ... })
import { Connector } from 'laravel-echo';
import { connectorClass } from './echo.js';

export const HeraldConnector = connectorClass(Connector);
export { connectorClass };
