// Drives the UNMODIFIED npm package kling-api (pinned in package.json) against a Kling-compatible
// server: create one text-to-video task, wait for its end with the package's own poller, read it
// once more with the package's own query method, and print ONE JSON line to stdout.
//
// Input (environment; never argv, so secrets stay out of `ps`):
//   KLING_HARNESS_BASE_URL    https://host:port (the package refuses anything but https://)
//   KLING_HARNESS_ACCESS_KEY  AK the package signs its JWT with (iss)
//   KLING_HARNESS_SECRET_KEY  SK (HS256 key)
//   KLING_HARNESS_PARAMS      optional JSON object merged over the default create parameters
//                             (model_name, mode, duration, prompt, external_task_id, callback_url...)
//   KLING_HARNESS_POLL_MS     optional poll interval in ms (default 200)
//   KLING_HARNESS_TIMEOUT_MS  optional overall wait in ms (default 60000)
// A TLS server with a test CA is trusted through NODE_EXTRA_CA_CERTS (read by Node itself).
//
// Output: {"ok", "task_id", "created_status", "final_status", "final_unit_deduction",
//          "external_task_id", "task_status_msg", "videos", "error"}; exit 0 only when the
// task ended "succeed" and nothing threw.
import { KlingAPI } from 'kling-api';

const DEFAULT_PARAMS = {
  prompt: 'a paper boat drifting on a calm lake at dawn',
  model_name: 'kling-v2-5-turbo',
  mode: 'std',
  duration: '5',
  aspect_ratio: '16:9',
};

function required(name) {
  const value = process.env[name];
  if (!value) {
    throw new Error(`${name} is not set`);
  }
  return value;
}

function number(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') {
    return fallback;
  }
  const value = Number.parseInt(raw, 10);
  if (!Number.isFinite(value) || value <= 0) {
    throw new Error(`${name} must be a positive whole number, got ${raw}`);
  }
  return value;
}

function describe(error) {
  if (error === null || error === undefined) {
    return null;
  }
  return {
    name: error.name ?? typeof error,
    message: error.message ?? String(error),
    code: error.code ?? null,
    http_status: error.httpStatus ?? null,
    request_id: error.requestId ?? null,
  };
}

// The package returns Kling's envelope as is; an answer with a non-zero code and HTTP 200 is
// not thrown by the package, so the harness reports it the same way as a thrown one.
function envelopeError(envelope) {
  if (envelope && typeof envelope === 'object' && envelope.code !== 0) {
    return {
      name: 'KlingEnvelopeError',
      message: envelope.message ?? null,
      code: envelope.code ?? null,
      http_status: 200,
      request_id: envelope.request_id ?? null,
    };
  }
  return null;
}

async function main() {
  const out = {
    ok: false,
    task_id: null,
    created_status: null,
    final_status: null,
    final_unit_deduction: null,
    external_task_id: null,
    task_status_msg: null,
    videos: [],
    error: null,
  };
  let api;
  try {
    const extra = process.env.KLING_HARNESS_PARAMS ? JSON.parse(process.env.KLING_HARNESS_PARAMS) : {};
    api = new KlingAPI({
      accessKey: required('KLING_HARNESS_ACCESS_KEY'),
      secretKey: required('KLING_HARNESS_SECRET_KEY'),
      baseUrl: required('KLING_HARNESS_BASE_URL'),
    });
    const created = await api.textToVideo({ ...DEFAULT_PARAMS, ...extra });
    out.error = envelopeError(created);
    out.task_id = created?.data?.task_id ?? null;
    out.created_status = created?.data?.task_status ?? null;
    out.external_task_id = created?.data?.task_info?.external_task_id ?? null;
    if (out.error === null && out.task_id === null) {
      out.error = { name: 'HarnessError', message: 'create answer has no data.task_id', code: null };
    }
    if (out.error === null) {
      // The package's own poller; it throws a KlingAPIError when the task ends "failed".
      await api.waitForVideoResult(out.task_id, undefined, {
        interval: number('KLING_HARNESS_POLL_MS', 200),
        timeout: number('KLING_HARNESS_TIMEOUT_MS', 60000),
        showSpinner: false,
      });
    }
  } catch (error) {
    out.error = describe(error);
  }
  if (api && out.task_id !== null) {
    // Read it once more (also after a failure, to report where the task ended).
    try {
      const last = await api.queryTextToVideoTask(out.task_id);
      const data = last?.data ?? {};
      out.error = out.error ?? envelopeError(last);
      out.final_status = data.task_status ?? null;
      out.final_unit_deduction = data.final_unit_deduction ?? null;
      out.task_status_msg = data.task_status_msg ?? null;
      out.external_task_id = data.task_info?.external_task_id ?? out.external_task_id;
      out.videos = (data.task_result?.videos ?? []).map((v) => ({ id: v.id, url: v.url, duration: v.duration }));
    } catch (error) {
      out.error = out.error ?? describe(error);
    }
  }
  out.ok = out.error === null && out.final_status === 'succeed';
  process.stdout.write(`${JSON.stringify(out)}\n`);
  return out.ok ? 0 : 1;
}

process.exitCode = await main();
