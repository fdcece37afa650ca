import { Connector } from 'laravel-echo';
import type { Channel, PresenceChannel, ConnectionStatus } from 'laravel-echo';
import type { Herald, HeraldChannel as Base, HeraldPresenceChannel as BasePresence, connectorClass } from './index.js';

export type HeraldChannel = Base & Channel;
export type HeraldPresenceChannel = BasePresence & PresenceChannel;

/** Connector mode: new Echo({ broadcaster: HeraldConnector, host, authEndpoint, ... }). */
export declare class HeraldConnector extends Connector<'null', HeraldChannel, HeraldChannel, HeraldPresenceChannel> {
  client: Herald;
  channels: Record<string, HeraldChannel>;
  connect(): void;
  channel(name: string): HeraldChannel;
  privateChannel(name: string): HeraldChannel;
  presenceChannel(name: string): HeraldPresenceChannel;
  encryptedPrivateChannel(name: string): never;
  listen(name: string, event: string, callback: (data: any) => void): HeraldChannel;
  leave(name: string): void;
  leaveChannel(name: string): void;
  socketId(): string | undefined;
  signin(): ReturnType<Herald['signin']>;
  readonly user: HeraldChannel;
  connectionStatus(): ConnectionStatus;
  onConnectionChange(callback: (status: ConnectionStatus) => void): () => void;
  disconnect(): void;
}
export { connectorClass };
