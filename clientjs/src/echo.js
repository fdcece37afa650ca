import { Herald } from './herald.js';

// connectorClass builds the connector on laravel-echo's Connector class (passed in, so a
// <script> page can use the Echo global and this package needs no import of laravel-echo).
export function connectorClass(Connector) {
  return class HeraldConnector extends Connector {
    // Connector's constructor calls connect() before subclass fields exist: state is made here.
    connect() {
      if (this.client) return this.client.connect();
      this.client = new Herald({ ...this.options, withoutInterceptors: true });
      this.channels = this.client.channels;
    }
    channel(name) { return this.client.channel(name); }
    privateChannel(name) { return this.client.private(name); }
    presenceChannel(name) { return this.client.join(name); }
    encryptedPrivateChannel(name) { return this.client.encryptedPrivate(name); }
    listen(name, event, cb) { return this.client.listen(name, event, cb); }
    leave(name) { this.client.leave(name); }
    leaveChannel(name) { this.client.leaveChannel(name); }
    socketId() { return this.client.socketId(); }
    signin() { return this.client.signin(); }
    get user() { return this.client.user; }
    connectionStatus() { return this.client.connectionStatus(); }
    onConnectionChange(cb) { return this.client.onConnectionChange(cb); }
    disconnect() { this.client.disconnect(); }
  };
}
