// A request as a curl command a user can paste into a POSIX shell. The key is never written
// out: the command reads it from $SERVAL_API_KEY.

function shellQuote(text) {
  return `'${text.replaceAll("'", "'\\''")}'`;
}

export function curlCommand(url, body, streaming) {
  const lines = [
    `curl${streaming ? " -N" : ""} ${shellQuote(url)}`,
    `-H "Authorization: Bearer $SERVAL_API_KEY"`,
    `-H 'Content-Type: application/json'`,
    `-d ${shellQuote(JSON.stringify(body))}`,
  ];
  return lines.join(" \\\n  ");
}
