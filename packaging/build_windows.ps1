# Build the Windows installer: a one-folder PyInstaller bundle (dist\tunedesk\: TuneDesk.exe, the
# windowed app, and tunedesk-cli.exe, its console twin for the command line and the app's workers),
# then dist\TuneDesk-<version>-windows-x64-setup.exe with Inno Setup 6 (packaging\tunedesk.iss) if
# ISCC.exe is installed, else (or with -Zip) dist\TuneDesk-<version>-windows-x64.zip.
# In PowerShell, from a fresh clone (Python 3.10-3.12 64-bit from python.org on PATH):
#   powershell -ExecutionPolicy Bypass -File packaging\build_windows.ps1
# Options:
#   -TorchIndexUrl https://download.pytorch.org/whl/cu128   a CUDA build of PyTorch (adds ~3 GB;
#       default: PyPI's Windows wheel, which is the CPU build)
#   -Zip              a zip instead of the Inno Setup installer
#   -Clean            ignore PyInstaller's cache
# Not run by the project's CI (Linux); see packaging\README.md for what has been tried.
param(
    [string]$TorchIndexUrl = "",
    [string]$TorchVersion = "2.13.0",
    [switch]$Zip,
    [switch]$Clean
)
$ErrorActionPreference = "Stop"
# Native commands write their output as they like; none of them has its stderr redirected with 2>
# (Windows PowerShell 5.1 would turn each stderr line into a terminating error under "Stop"), and
# each one's exit code is checked.
Set-Location (Join-Path $PSScriptRoot "..")

function Invoke-Checked([string]$What, [scriptblock]$Block) {
    & $Block
    if ($LASTEXITCODE -ne 0) { throw "$What failed (exit $LASTEXITCODE)" }
}

$py = ".venv\Scripts\python.exe"
if (-not (Test-Path $py)) {
    Invoke-Checked "creating .venv" { python -m venv .venv }
}
& $py -c "import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('torch') else 1)"
if ($LASTEXITCODE -ne 0) {
    Write-Host "installing torch $TorchVersion..."
    $torchArgs = @("-m", "pip", "install", "-q", "torch==$TorchVersion")
    if ($TorchIndexUrl) { $torchArgs += @("--index-url", $TorchIndexUrl) }
    Invoke-Checked "installing torch" { & $py @torchArgs }
}
Write-Host "installing tunedesk with the packaging extra (PyInstaller)..."
Invoke-Checked "installing tunedesk" { & $py -m pip install -q -e ".[packaging]" }

$version = (& $py -c "import backends; print(backends.__version__)").Trim()
$cuda = (& $py -c "import torch; print(torch.version.cuda or '')").Trim()
$flavour = if ($cuda) { "cuda" } else { "cpu" }
Write-Host "PyTorch: $flavour build$(if ($cuda) { " (CUDA $cuda)" })"

New-Item -ItemType Directory -Force build | Out-Null
$piArgs = @("-m", "PyInstaller", "--noconfirm", "--distpath", "dist", "--workpath", "build\pyinstaller")
if ($Clean) { $piArgs += "--clean" }
$piArgs += "packaging\tunedesk.spec"
Write-Host "building dist\tunedesk with PyInstaller..."
$start = Get-Date
# PyInstaller logs on stderr: into build\pyinstaller.log through Start-Process (see above)
$proc = Start-Process -FilePath $py -ArgumentList $piArgs -NoNewWindow -Wait -PassThru `
    -RedirectStandardError build\pyinstaller.log
if ($proc.ExitCode -ne 0) {
    Get-Content build\pyinstaller.log -Tail 40
    throw "PyInstaller failed: full log in build\pyinstaller.log"
}
Write-Host ("PyInstaller done in {0:N0} s (log: build\pyinstaller.log)" -f ((Get-Date) - $start).TotalSeconds)

$bundle = "dist\tunedesk"
foreach ($exe in @("TuneDesk.exe", "tunedesk-cli.exe")) {
    if (-not (Test-Path (Join-Path $bundle $exe))) { throw "$exe is missing in $bundle" }
}
if ($flavour -eq "cpu") {
    $cudaDlls = Get-ChildItem -Recurse $bundle -Include "cudart*.dll", "cublas*.dll", "cudnn*.dll", "nccl*.dll"
    if ($cudaDlls) { throw "CUDA libraries in the CPU bundle: $($cudaDlls.Name -join ', ')" }
    Write-Host "no CUDA libraries in the bundle"
}
# The bundled console executable must run on its own (the hardware probe imports torch inside it).
& "$bundle\tunedesk-cli.exe" hardware --json > build\hardware.json
if ($LASTEXITCODE -ne 0) { throw "the bundled tunedesk-cli.exe hardware --json failed" }
$hw = Get-Content build\hardware.json -Raw | ConvertFrom-Json
Write-Host "bundle check: backend $($hw.backend) on $($hw.device) ($($hw.reason))"

$files = Get-ChildItem -Recurse -File $bundle
$bytes = ($files | Measure-Object -Sum Length).Sum
Write-Host ("bundle size: {0} {1:N0} MB ({2} bytes, {3} files)" -f $bundle, ($bytes / 1MB), $bytes, $files.Count)

$name = "TuneDesk-$version-windows-x64$(if ($flavour -eq 'cuda') { '-cuda' })"
$iscc = @(
    (Get-Command ISCC.exe -ErrorAction SilentlyContinue).Source,
    "${env:ProgramFiles(x86)}\Inno Setup 6\ISCC.exe",
    "$env:ProgramFiles\Inno Setup 6\ISCC.exe",
    "$env:LOCALAPPDATA\Programs\Inno Setup 6\ISCC.exe"
) | Where-Object { $_ -and (Test-Path $_) } | Select-Object -First 1
if (-not $Zip -and $iscc) {
    Write-Host "making the installer with $iscc..."
    Invoke-Checked "Inno Setup" {
        & $iscc /Q "/DAppVersion=$version" "/DSourceDir=$((Resolve-Path $bundle).Path)" `
            "/DOutputName=$name-setup" "/DOutputDir=$((Resolve-Path dist).Path)" packaging\tunedesk.iss
    }
    $out = "dist\$name-setup.exe"
} else {
    if (-not $Zip) { Write-Host "Inno Setup 6 (ISCC.exe) not found: making a zip instead (winget install JRSoftware.InnoSetup)" }
    $out = "dist\$name.zip"
    if (Test-Path $out) { Remove-Item $out }
    # bsdtar (Windows 10 1803+) is much faster than Compress-Archive on a GB of files
    Push-Location dist
    try { Invoke-Checked "zip" { tar.exe -a -c -f "$name.zip" tunedesk } } finally { Pop-Location }
}
$size = (Get-Item $out).Length
Write-Host ("installer: {0} {1:N0} MB ({2} bytes)" -f $out, ($size / 1MB), $size)
