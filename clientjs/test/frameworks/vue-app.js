// The Vue page of hooks.test.js: @laravel/echo-vue's composables on the Herald connector.
import { createApp, defineComponent, h, onMounted, watch } from 'vue';
import { configureEcho, useEcho, useEchoPresence, useConnectionStatus } from '@laravel/echo-vue';
import { HeraldConnector } from '../../src/connector.js';

const params = new URLSearchParams(location.search);
const me = { id: params.get('id'), name: params.get('name') };
configureEcho({
  broadcaster: HeraldConnector,
  host: window.HERALD_HOST,
  authEndpoint: '/broadcasting/auth',
  auth: { headers: { 'X-User': JSON.stringify(me) } },
});

const seen = window.seen = { badge: [], messages: [], here: [] };

const App = defineComponent({
  setup() {
    const status = useConnectionStatus();
    watch(status, s => seen.badge.push(s), { immediate: true });
    useEcho('conversation.1', 'MessageSent', e => seen.messages.push(e.text));
    const presence = useEchoPresence('room.1');
    onMounted(() => presence.channel().here(users => seen.here.push(users.map(u => u.name).sort())));
    return () => h('h3', `${me.name} ${status.value}`);
  },
});

createApp(App).mount('#root');
