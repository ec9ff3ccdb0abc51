# Windows installer: freeze with PyInstaller, smoke-test the frozen app, build the Inno
# Setup installer, install it silently, smoke-test the installed app, uninstall.
# Run from the repository root on Windows x64 with Python 3.11 and Inno Setup 6 (iscc on
# PATH or in its default folder):   powershell -File packaging\windows\build.ps1
# Not runnable on the project's Linux machines; see packaging/README.md.
$ErrorActionPreference = "Stop"
Set-Location (Join-Path $PSScriptRoot "..\..")

$version = (Select-String -Path pyproject.toml -Pattern '^version = "(.*)"').Matches[0].Groups[1].Value
$python = if (Test-Path .venv\Scripts\python.exe) { ".venv\Scripts\python.exe" } else { "python" }

function Step($name, [scriptblock]$block) {
    $watch = [Diagnostics.Stopwatch]::StartNew()
    & $block
    if ($LASTEXITCODE -and $LASTEXITCODE -ne 0) { throw "$name failed (exit $LASTEXITCODE)" }
    Write-Host ("{0}: {1:N1} s" -f $name, $watch.Elapsed.TotalSeconds)
}

Step "pyinstaller" { & $python -m PyInstaller --noconfirm --log-level WARN --distpath dist --workpath build\pyinstaller packaging\mergestudio.spec }
$env:QT_QPA_PLATFORM = "offscreen"
Step "frozen smoke" { & dist\mergestudio\mergestudio.exe --smoke }

$iscc = (Get-Command iscc -ErrorAction SilentlyContinue).Source
if (-not $iscc) { $iscc = "${env:ProgramFiles(x86)}\Inno Setup 6\ISCC.exe" }
Step "inno setup" { & $iscc /Qp "/DAppVersion=$version" packaging\windows\mergestudio.iss }
$setup = "dist\MergeStudio-$version-windows-x64-setup.exe"
Write-Host ("installer: {0} ({1:N0} MB)" -f $setup, ((Get-Item $setup).Length / 1MB))

# Install per user, silently, check, uninstall: the installer must not rot either.
$target = Join-Path $env:LOCALAPPDATA "Programs\Merge Studio"
Step "install" { Start-Process -Wait -FilePath $setup -ArgumentList "/VERYSILENT", "/SUPPRESSMSGBOXES", "/CURRENTUSER", "/TASKS=addtopath" }
Step "installed smoke" { & (Join-Path $target "mergestudio.exe") --smoke }
Step "uninstall" { Start-Process -Wait -FilePath (Join-Path $target "unins000.exe") -ArgumentList "/VERYSILENT", "/SUPPRESSMSGBOXES" }
if (Test-Path (Join-Path $target "mergestudio.exe")) { throw "uninstall left $target behind" }
