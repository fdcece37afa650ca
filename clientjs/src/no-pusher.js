// A stand-in for pusher-js, for bundler aliases ('pusher-js' → '@herald-rt/echo/no-pusher').
// @laravel/echo-react and @laravel/echo-vue import pusher-js at the top of their bundles only to
// default Echo's `Pusher` option, which a custom connector never reads: with this alias an app
// on Herald needs no pusher-js installed and ships none of it. Constructing it is a mistake
// (some other code wanted the real Pusher client), so it says so instead of failing later.
export default class Pusher {
  constructor() {
    throw new Error('pusher-js is aliased to @herald-rt/echo/no-pusher: Herald needs no Pusher client; ' +
      'remove the alias if other code uses pusher-js');
  }
}
