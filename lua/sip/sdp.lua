--- SDP offer/answer (RFC 3264) over libosip2's SDP parser.
-- `sip.sdp` builds and reads SDP (RFC 4566) text: one audio stream per
-- offer, answers that keep the offer's codec order and payload types.
-- Codec names: `PCMU`, `PCMA`, `G722`, `G729`, `GSM`, `opus`,
-- `telephone-event` (others raise). docs/sdp.md has the tables.
-- @module sip.sdp

local core = require "sip.core"

local sdp = {}

-- static payload types and our defaults for dynamic ones
local codecs = {
  PCMU = { pt = 0, rate = 8000 },
  GSM = { pt = 3, rate = 8000 },
  PCMA = { pt = 8, rate = 8000 },
  G722 = { pt = 9, rate = 8000 },
  G729 = { pt = 18, rate = 8000 },
  ["telephone-event"] = { pt = 101, rate = 8000, fmtp = "0-16" },
  opus = { pt = 111, rate = 48000, channels = 2 },
}
local by_static_pt = {}
for name, c in pairs(codecs) do
  if c.pt < 96 then by_static_pt[tostring(c.pt)] = name end
end

local mirror = { sendonly = "recvonly", recvonly = "sendonly", inactive = "inactive",
                 sendrecv = "sendrecv" }

local function check_addr(addr, fname)
  if type(addr) ~= "string" or addr:find("[%s\r\n]") then
    error("bad argument #1 to '" .. fname .. "' (opts.addr must be an address string)", 3)
  end
end

--- Parse SDP text into a table: version, origin, name, addr, direction,
-- attributes, media = { { media, port, proto, addr, formats, attributes,
-- direction, codecs = { { pt, name, rate, channels, fmtp } } } }.
-- `origin` is
-- `{ username, sess_id, sess_version, nettype, addrtype, addr }`;
-- `direction` defaults to `"sendrecv"`, a stream's to the
-- session's; static payload types are named without an `a=rtpmap`
-- (0 PCMU, 3 GSM, 8 PCMA, 9 G722, 18 G729).
-- @string text SDP text
-- @treturn table the description
-- @return[2] nil
-- @treturn[2] string why (`"sdp: unparsable"`)
function sdp.parse(text)
  if type(text) ~= "string" then
    error("bad argument #1 to 'parse' (string expected, got " .. type(text) .. ")", 2)
  end
  local t, err = core.sdp_parse(text)
  if not t then return nil, err end
  for _, m in ipairs(t.media) do
    local map, fmtp = {}, {}
    for _, a in ipairs(m.attributes) do
      if a.name == "rtpmap" and a.value then
        local pt, name, rate, ch = a.value:match("^(%d+)%s+([^/%s]+)/(%d+)/?(%d*)")
        if pt then map[pt] = { name = name, rate = tonumber(rate), channels = tonumber(ch) } end
      elseif a.name == "fmtp" and a.value then
        local pt, v = a.value:match("^(%d+)%s+(.*)$")
        if pt then fmtp[pt] = v end
      end
    end
    m.codecs = {}
    for _, pt in ipairs(m.formats) do
      local r = map[pt]
      local name = r and r.name or by_static_pt[pt]
      m.codecs[#m.codecs + 1] = { pt = tonumber(pt), name = name, rate = r and r.rate or 8000,
                                  channels = r and r.channels, fmtp = fmtp[pt] }
    end
    m.direction = m.direction or t.direction or "sendrecv"
  end
  t.direction = t.direction or "sendrecv"
  return t
end

local function ip_type(addr)
  return addr:find(":") and "IP6" or "IP4"
end

-- serialise our session description: one text, always complete
local function build(s)
  local out = {
    "v=0",
    string.format("o=%s %s %d IN %s %s", s.username or "luasip", s.sess_id, s.version,
                  ip_type(s.addr), s.addr),
    "s=" .. (s.name or "luasip"),
    string.format("c=IN %s %s", ip_type(s.addr), s.addr),
    "t=0 0",
  }
  for _, m in ipairs(s.media) do
    local fmts = {}
    for i, c in ipairs(m.codecs) do fmts[i] = tostring(c.pt) end
    if #fmts == 0 then fmts[1] = m.reject_format or "0" end
    out[#out + 1] = string.format("m=%s %d %s %s", m.media or "audio", m.port,
                                  m.proto or "RTP/AVP", table.concat(fmts, " "))
    if m.port ~= 0 then
      for _, c in ipairs(m.codecs) do
        if c.name then
          out[#out + 1] = string.format("a=rtpmap:%d %s/%d%s", c.pt, c.name, c.rate or 8000,
                                        c.channels and ("/" .. c.channels) or "")
        end
        if c.fmtp then out[#out + 1] = string.format("a=fmtp:%d %s", c.pt, c.fmtp) end
      end
      out[#out + 1] = "a=" .. (m.direction or "sendrecv")
    end
  end
  return table.concat(out, "\r\n") .. "\r\n"
end

local function new_session(addr)
  return { sess_id = tostring(math.random(1, 2 ^ 31 - 1)), version = 1, addr = addr, media = {} }
end

local function codec_list(names, fname)
  local list = {}
  for i, name in ipairs(names or { "PCMU", "PCMA", "telephone-event" }) do
    local c = codecs[name]
    if not c then
      error("bad argument #1 to '" .. fname .. "' (unknown codec '" .. tostring(name) ..
            "'; known: PCMU, PCMA, G722, G729, GSM, opus, telephone-event)", 3)
    end
    list[i] = { pt = c.pt, name = name, rate = c.rate, channels = c.channels, fmtp = c.fmtp }
  end
  return list
end

--- Build an offer.
-- @tab opts addr (required), port (default 4000), codecs (names, default
-- PCMU, PCMA, telephone-event), direction (default sendrecv)
-- (`sendonly`, `recvonly`, `inactive`)
-- @treturn string SDP text
-- @treturn table the session, to pass to sdp.update for a later offer
function sdp.offer(opts)
  if type(opts) ~= "table" then
    error("bad argument #1 to 'offer' (table expected, got " .. type(opts) .. ")", 2)
  end
  check_addr(opts.addr, "offer")
  local s = new_session(opts.addr)
  s.media[1] = { media = "audio", port = opts.port or 4000, proto = "RTP/AVP",
                 codecs = codec_list(opts.codecs, "offer"), direction = opts.direction or "sendrecv" }
  return build(s), s
end

--- Build an answer to an offer (text or parsed table): the common codecs
-- in the offer's order, the mirrored direction, port 0 for m-lines we
-- cannot take; fail, "no common codec" when no audio stream is left.
-- The first audio stream with a codec in common (matched by name and
-- clock rate; `telephone-event` alone is not enough) is taken; every
-- other `m=` line is rejected with port 0.
-- @param offer the offer: SDP text, or a table from `sdp.parse`
-- @tab opts addr (required), port, codecs (names we support), direction
-- (our wish, combined with the offer's)
-- @treturn string SDP text
-- @treturn table the session
-- @return[2] nil
-- @treturn[2] string `"no common codec"`, or why the offer does not parse
function sdp.answer(offer, opts)
  if type(offer) == "string" then
    local parsed, err = sdp.parse(offer)
    if not parsed then return nil, err end
    offer = parsed
  elseif type(offer) ~= "table" then
    error("bad argument #1 to 'answer' (SDP text or table expected)", 2)
  end
  if type(opts) ~= "table" then
    error("bad argument #2 to 'answer' (table expected, got " .. type(opts) .. ")", 2)
  end
  check_addr(opts.addr, "answer")
  local ours = {}
  for _, c in ipairs(codec_list(opts.codecs, "answer")) do ours[c.name:lower()] = c end
  local s = new_session(opts.addr)
  local taken = false
  for i, m in ipairs(offer.media or {}) do
    local common = {}
    if m.media == "audio" and m.port ~= 0 and not taken then
      for _, c in ipairs(m.codecs or {}) do
        local mine = c.name and ours[c.name:lower()]
        if mine and (c.rate or 8000) == mine.rate then
          common[#common + 1] = { pt = c.pt, name = c.name, rate = c.rate, channels = c.channels,
                                  fmtp = c.fmtp or mine.fmtp }
        end
      end
    end
    -- telephone-event alone is no audio stream
    local audio = false
    for _, c in ipairs(common) do
      if c.name:lower() ~= "telephone-event" then audio = true end
    end
    if audio then
      taken = true
      local dir = mirror[m.direction or "sendrecv"] or "sendrecv"
      local want = opts.direction or "sendrecv"
      if want ~= "sendrecv" and dir ~= want then
        -- both limits apply: what is left of sending and receiving
        local send = (dir == "sendrecv" or dir == "sendonly") and (want == "sendonly")
        local recv = (dir == "sendrecv" or dir == "recvonly") and (want == "recvonly")
        dir = send and "sendonly" or recv and "recvonly" or "inactive"
      end
      s.media[i] = { media = m.media, port = opts.port or 4000, proto = m.proto, codecs = common,
                     direction = dir }
    else
      s.media[i] = { media = m.media, port = 0, proto = m.proto, codecs = {},
                     reject_format = m.formats and m.formats[1] }
    end
  end
  -- an answer with every stream refused is no session: say so, and
  -- the caller answers the INVITE 488 (RFC 3261 13.3.1.3)
  if not taken then return nil, "no common codec" end
  return build(s), s
end

--- A new version of a session we built (bumps o= version): change its
-- direction (and optionally port) for a re-INVITE, hold or unhold.
-- The changes apply to its accepted streams (port not 0).
-- @tab session a session from `sdp.offer` or `sdp.answer`
-- @tab[opt] changes `direction`, `port`
-- @treturn string SDP text
-- @treturn table the session
function sdp.update(session, changes)
  if type(session) ~= "table" or not session.media then
    error("bad argument #1 to 'update' (session table from sdp.offer/answer expected)", 2)
  end
  session.version = session.version + 1
  for _, m in ipairs(session.media) do
    if m.port ~= 0 then
      if changes and changes.direction then m.direction = changes.direction end
      if changes and changes.port then m.port = changes.port end
    end
  end
  return build(session), session
end

-- Default answers by offer (its o= line left out) and address: peers
-- send the same offer call after call, and only our o= line must differ
-- per session, so a cached answer is cut around its session id.
local answer_cache, answer_cache_n = {}, 0

--- The answer the core gives when a script supplies none: every offered
-- stream inactive on the discard port, so offer/answer stays valid; fail,
-- "no common codec" (or why the offer does not parse) when none is possible.
-- It is `sdp.answer` with every known codec, direction `inactive`, port 9.
-- @param offer SDP text or a parsed table
-- @string addr our media address
-- @treturn string SDP text
-- @return[2] nil
-- @treturn[2] string why
function sdp.default_answer(offer, addr)
  if type(offer) ~= "string" then
    return (sdp.answer(offer, { addr = addr, port = 9, codecs = { "PCMU", "PCMA", "G722",
      "G729", "GSM", "opus", "telephone-event" }, direction = "inactive" }))
  end
  -- the offer without its o= line (plain finds: a pattern walks every byte)
  local key
  local o = offer:find("\no=", 1, true)
  local eol = o and offer:find("\n", o + 3, true)
  if eol then
    key = offer:sub(1, o) .. offer:sub(eol + 1) .. "\0" .. addr
  else
    key = offer .. "\0" .. addr
  end
  local parts = answer_cache[key]
  if not parts then
    local text, err = sdp.answer(offer, { addr = addr, port = 9, codecs = { "PCMU", "PCMA", "G722",
      "G729", "GSM", "opus", "telephone-event" }, direction = "inactive" })
    if not text then return nil, err end
    local a, b = text:match("^(.-\no=%S+ )%d+( .*)$")
    if not a then return text end
    if answer_cache_n >= 128 then answer_cache, answer_cache_n = {}, 0 end
    parts = { a, b }
    answer_cache[key] = parts
    answer_cache_n = answer_cache_n + 1
    return text
  end
  return parts[1] .. math.random(1, 2 ^ 31 - 1) .. parts[2]
end

--- The codecs `offer` and `answer` know, with their static or default
-- payload types: name -> `{ pt =, rate =, channels =, fmtp = }`.
-- @table codecs
sdp.codecs = codecs
--- A direction -> its mirror in an answer (`sendonly` -> `recvonly` ...).
-- @table mirror
sdp.mirror = mirror

return sdp
